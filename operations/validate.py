"""$validate (type and instance level, every resource type): the OperationOutcome a write would produce.

Same checks as the write path (profiles.engine.validate_for_write): base FHIR R4 parsing with the
fhir.resources R4B models, then — when profile enforcement is on — the SI-DEP profile of the type, or the
one named by the `profile` parameter, with its terminology bindings and validators.
The answer is always 200 with an OperationOutcome (errors included); only a malformed call is a 4xx.
"""

from __future__ import annotations

from fhir_server.outcome import FhirError, Issue, operation_outcome
from profiles.engine import validate_for_write

from .registry import operation

# FHIR R4 (4.0.1) resource types.
R4_RESOURCE_TYPES = (
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VisionPrescription",
)

PARAMETERS = [
    {"name": "resource", "use": "in", "min": 0, "max": "1", "type": "Resource"},
    {"name": "mode", "use": "in", "min": 0, "max": "1", "type": "code"},
    {"name": "profile", "use": "in", "min": 0, "max": "1", "type": "uri"},
    {"name": "return", "use": "out", "min": 1, "max": "1", "type": "OperationOutcome"},
]
MODES = ("create", "update", "delete")


def profiles_enforced() -> bool:
    """The server's setting (Settings.enforce_profiles); on outside an application (library use)."""
    try:
        from flask import current_app

        return current_app.config["SETTINGS"].enforce_profiles
    except (RuntimeError, KeyError):
        return True


def _resource_from(call) -> dict | None:
    supplied = call.param("resource")
    if isinstance(supplied, dict):
        return supplied
    body = call.body
    if isinstance(body, dict) and body.get("resourceType") not in (None, "Parameters"):
        return body  # a client may POST the bare resource
    return None


def _mode(call) -> str | None:
    mode = call.param("mode")
    if mode is not None and mode not in MODES:
        raise FhirError.of(
            400, "invalid", f"mode must be one of {', '.join(MODES)}", f"mode doit valoir {', '.join(MODES)}", "mode"
        )
    return mode


def _other_type(call, resource: dict) -> Issue:
    return Issue(
        "error",
        "invalid",
        f"The resource is a {resource.get('resourceType')}, the URL names {call.resource_type}",
        f"La ressource est de type {resource.get('resourceType')}, l'URL désigne {call.resource_type}",
        ["resourceType"],
    )


def _mode_issues(call, mode: str | None, resource: dict) -> list[Issue]:
    if call.level == "instance" and resource.get("resourceType") not in (None, call.resource_type):
        return [_other_type(call, resource)]
    if mode != "update":
        return []
    if not resource.get("id"):
        return [
            Issue(
                "error",
                "required",
                "An update needs the resource id",
                "Une mise à jour requiert l'id",
                [f"{resource.get('resourceType')}.id"],
            )
        ]
    if call.level == "instance" and resource["id"] != call.resource_id:
        return [
            Issue(
                "error",
                "invalid",
                f"The resource id '{resource['id']}' differs from the URL id '{call.resource_id}'",
                f"L'id de la ressource « {resource['id']} » diffère de celui de l'URL « {call.resource_id} »",
                [f"{resource.get('resourceType')}.id"],
            )
        ]
    return []


@operation(
    "validate",
    types=R4_RESOURCE_TYPES,
    instance_types=R4_RESOURCE_TYPES,
    parameters=PARAMETERS,
    description="Validate a resource (base R4, then the SI-DEP profile and terminology): "
    "the OperationOutcome a create/update would produce",
)
def validate(call):
    mode = _mode(call)
    resource = _resource_from(call)
    if mode == "delete":  # nothing forbids deleting: just say whether the target exists
        if call.level == "instance" and call.store is not None:
            call.store.read(call.resource_type, call.resource_id)
        return operation_outcome(
            [Issue("information", "informational", "Delete would be accepted", "La suppression serait acceptée")],
            call.lang,
        )
    if resource is None and call.level == "instance" and call.store is not None:
        resource = call.store.read(call.resource_type, call.resource_id).resource  # validate what is stored
    if resource is None:
        raise FhirError.of(
            400,
            "required",
            "No resource to validate: send it as the 'resource' parameter",
            "Aucune ressource à valider : l'envoyer dans le paramètre « resource »",
            "resource",
        )
    issues = _mode_issues(call, mode, resource)
    if call.level == "type" and resource.get("resourceType") != call.resource_type:
        issues.append(_other_type(call, resource))
    issues += validate_for_write(resource, call.lang, call.param("profile"), profiles_enforced())
    if not issues:
        issues = [
            Issue(
                "information",
                "informational",
                "Validation successful: the resource would be accepted",
                "Validation réussie : la ressource serait acceptée",
            )
        ]
    return operation_outcome(issues, call.lang)
