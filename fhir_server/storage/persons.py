"""Person records in MongoDB (`_persons`): the platform's own record of one person, linking the
Patients each laboratory sent for them (fhir_server/identity.py decides the links).

    {_id, v, ts, ins: ["system|value"], birthDate, gender,
     links: [{patient: "Patient/<id>", org: <owner key>, state: "match" | "conflict",
              reason, differs: [trait, ...], ts}]}

`ins` is unique (one person per INS); a Patient is linked to one person at most. Writes go
through a unit of work's session, so a person record changes in the same transaction as the
Patient that caused it; a version guard makes concurrent writers retry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from bson import ObjectId
from pymongo.database import Database

from ..search.dates import utc_now
from .mongo import PERSONS
from .store import Conflict, UnitOfWork

MATCH = "match"
CONFLICT = "conflict"


@dataclass
class Link:
    patient: str  # "Patient/<id>"
    org: str | None  # the owner key of the laboratory that sent it
    state: str  # MATCH or CONFLICT
    reason: str  # why: "INS", or what differs
    differs: list[str]
    ts: datetime

    def to_doc(self) -> dict:
        return {
            "patient": self.patient,
            "org": self.org,
            "state": self.state,
            "reason": self.reason,
            "differs": self.differs,
            "ts": self.ts,
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "Link":
        return cls(
            doc["patient"], doc.get("org"), doc["state"], doc.get("reason", ""), doc.get("differs", []), doc["ts"]
        )


@dataclass
class Person:
    id: str
    version: int
    ins: list[str]
    birth_date: str | None
    gender: str | None
    links: list[Link] = field(default_factory=list)

    def link_of(self, patient: str) -> Link | None:
        return next((link for link in self.links if link.patient == patient), None)

    def drop(self, patient: str) -> None:
        """Forget the link of `patient`, if any."""
        self.links = [link for link in self.links if link.patient != patient]

    def matched(self) -> list[str]:
        return [link.patient for link in self.links if link.state == MATCH]

    def to_doc(self, now: datetime) -> dict:
        return {
            "_id": self.id,
            "v": self.version,
            "ts": now,
            "ins": self.ins,
            "birthDate": self.birth_date,
            "gender": self.gender,
            "links": [link.to_doc() for link in self.links],
        }

    @classmethod
    def from_doc(cls, doc: dict) -> "Person":
        return cls(
            doc["_id"],
            doc["v"],
            doc["ins"],
            doc.get("birthDate"),
            doc.get("gender"),
            [Link.from_doc(d) for d in doc.get("links", [])],
        )


def new_person(ins: list[str], birth_date: str | None, gender: str | None) -> Person:
    return Person(str(ObjectId()), 0, ins, birth_date, gender)


# -- inside a unit of work ------------------------------------------------------------------------
def person_with_ins(uow: UnitOfWork, ins: list[str]) -> Person | None:
    doc = uow.store.collection(PERSONS).find_one({"ins": {"$in": ins}}, session=uow.session)
    return Person.from_doc(doc) if doc else None


def person_of(uow: UnitOfWork, patient: str) -> Person | None:
    doc = uow.store.collection(PERSONS).find_one({"links.patient": patient}, session=uow.session)
    return Person.from_doc(doc) if doc else None


def save_person(uow: UnitOfWork, person: Person) -> None:
    """Insert a new person (version 0 -> 1) or replace the version read; a concurrent writer
    having changed it makes the unit retry."""
    collection = uow.store.collection(PERSONS)
    previous = person.version
    person.version += 1
    if previous == 0:
        collection.insert_one(person.to_doc(uow.now), session=uow.session)
        return
    result = collection.replace_one({"_id": person.id, "v": previous}, person.to_doc(uow.now), session=uow.session)
    if result.matched_count != 1:
        raise Conflict(f"person {person.id}")


# -- reads outside units ----------------------------------------------------------------------
class Persons:
    """What operators and the citizen-facing features read of person records."""

    def __init__(self, db: Database):
        self.collection = db[PERSONS]

    def of_patient(self, patient: str) -> Person | None:
        doc = self.collection.find_one({"links.patient": patient})
        return Person.from_doc(doc) if doc else None

    def get(self, person_id: str) -> Person | None:
        doc = self.collection.find_one({"_id": person_id})
        return Person.from_doc(doc) if doc else None

    def with_conflicts(self, limit: int = 100) -> list[Person]:
        """Person records with an identity conflict, most recently changed first."""
        cursor = self.collection.find({"links.state": CONFLICT}).sort("ts", -1).limit(limit)
        return [Person.from_doc(doc) for doc in cursor]

    def count_conflicts(self) -> int:
        return self.collection.count_documents({"links.state": CONFLICT})

    def forget(self, patients: list[str]) -> tuple[int, int]:
        """Drop the links of these Patients ("Patient/<id>", purged by retention), and the person
        records left with no link: they were only the platform's record of those Patients.
        Each changed record gets a new version, so a unit of work that read it first retries.
        Returns (links dropped, persons removed)."""
        if not patients:
            return 0, 0
        touched = [doc["_id"] for doc in self.collection.find({"links.patient": {"$in": patients}}, {"_id": 1})]
        if not touched:
            return 0, 0
        before = self._links(touched)
        self.collection.update_many(
            {"_id": {"$in": touched}},
            {"$pull": {"links": {"patient": {"$in": patients}}}, "$inc": {"v": 1}, "$set": {"ts": utc_now()}},
        )
        dropped = before - self._links(touched)
        removed = self.collection.delete_many({"_id": {"$in": touched}, "links": {"$size": 0}}).deleted_count
        return dropped, removed

    def _links(self, person_ids: list[str]) -> int:
        return sum(
            len(doc.get("links", [])) for doc in self.collection.find({"_id": {"$in": person_ids}}, {"links": 1})
        )
