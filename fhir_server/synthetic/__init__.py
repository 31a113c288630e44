"""Synthetic SI-DEP data for tests and benchmarks (see generator.py for the identifier conventions)."""

from .generator import (
    RESEND_CHANGES,
    Laboratory,
    Person,
    Site,
    default_laboratories,
    generate_bundles,
    generate_result_bundle,
    make_finess,
    make_laboratories,
    make_nir,
    make_person,
    make_phone,
    make_rpps,
    patient_resource,
    resend_bundle,
)

__all__ = [
    "RESEND_CHANGES",
    "Laboratory",
    "Person",
    "Site",
    "default_laboratories",
    "generate_bundles",
    "generate_result_bundle",
    "make_finess",
    "make_laboratories",
    "make_nir",
    "make_person",
    "make_phone",
    "make_rpps",
    "patient_resource",
    "resend_bundle",
]
