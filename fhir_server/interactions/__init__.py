"""One module per FHIR RESTful interaction (read, vread, create, update, delete, history, search,
batch/transaction, capabilities) plus the `$operation` dispatcher. Each module holds the HTTP
handler and, for writes, the function that does the work inside a unit of work, which the
transaction interaction reuses."""
