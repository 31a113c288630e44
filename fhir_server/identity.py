"""One person across laboratories, without one laboratory rewriting another's Patient.

In the manner of HAPI FHIR's MDM module: each laboratory's Patient is a source record that only
that laboratory writes (its certificates carry the identity it sent); the platform keeps a person
record (the golden record, storage/persons.py) linking every source Patient that carries the same
INS, with the link's state and reason. What needs the person rather than one laboratory's view —
the citizen's list of results, the pseudonym of the public-health feed — reads the person's
matched links.

Rules, applied in the unit of work that writes the Patient:
- a Patient with an INS no person has yet starts a person record, whose birth date and sex are
  that Patient's;
- a Patient with an INS a person has is linked as a match when its birth date and sex agree with
  the person's; when either differs it is linked as a conflict — never a silent merge — and an
  `identity-conflict` outbox event tells operators (who also see the conflicts in the operators'
  console and with `python -m fhir_server persons --conflicts`); the laboratory that sent the wrong
  identity corrects its Patient, and the next write re-links it;
- a person's only source Patient may correct the person's traits (there is nobody to disagree);
- a Patient that loses its INS, changes it, or is deleted leaves its person.
Matching by identity traits (without INS) never crosses laboratories: see submission.py.
"""

from __future__ import annotations

from .interactions.write_hooks import WriteHooks
from .storage import Record, UnitOfWork
from .storage.persons import CONFLICT, MATCH, Link, Person, new_person, person_of, person_with_ins, save_person
from .submission import unique_identifiers

CONFLICT_EVENT = "identity-conflict"
TRAITS = {"birthDate": "birth_date", "gender": "gender"}


def register(hooks: WriteHooks) -> None:
    hooks.on_write.append(link_written_patient)
    hooks.on_delete.append(unlink_deleted_patient)


def link_written_patient(uow: UnitOfWork, record: Record, previous: Record | None) -> None:
    if record.type != "Patient" or record is previous:
        return
    ref = f"Patient/{record.id}"
    ins = unique_identifiers(record.resource or {})  # a Patient's: its INS
    current = person_of(uow, ref) if previous is not None else None  # a new Patient has no link yet
    person = person_with_ins(uow, ins) if ins else None
    if current is not None and (person is None or person.id != current.id):
        _unlink(uow, current, ref)
    if not ins:
        return
    person = person or new_person(ins, record.resource.get("birthDate"), record.resource.get("gender"))
    _link(uow, person, ref, record)


def unlink_deleted_patient(uow: UnitOfWork, record: Record) -> None:
    if record.type == "Patient":
        ref = f"Patient/{record.id}"
        person = person_of(uow, ref)
        if person is not None:
            _unlink(uow, person, ref)


def _link(uow: UnitOfWork, person: Person, ref: str, record: Record) -> None:
    patient = record.resource
    traits_before = (person.birth_date, person.gender)
    if not any(link.state == MATCH and link.patient != ref for link in person.links):
        person.birth_date, person.gender = patient.get("birthDate"), patient.get("gender")  # the only source
    differs = [trait for trait, attribute in TRAITS.items() if patient.get(trait) != getattr(person, attribute)]
    state = CONFLICT if differs else MATCH
    before = person.link_of(ref)
    unchanged = before is not None and (before.state, before.differs) == (state, differs)
    if person.version and unchanged and traits_before == (person.birth_date, person.gender):
        return
    reason = "INS" if not differs else "INS with another " + " and ".join(differs)
    person.drop(ref)
    person.links.append(Link(ref, uow.owner, state, reason, differs, uow.now))
    save_person(uow, person)
    if state == CONFLICT and not unchanged:
        uow.emit(CONFLICT_EVENT, {"person": person.id, "patient": ref, "differs": differs}, key=f"person/{person.id}")


def _unlink(uow: UnitOfWork, person: Person, ref: str) -> None:
    person.drop(ref)
    save_person(uow, person)
