//! SMART on FHIR scope grammar, v1 and v2, and matching.
//!
//! Grammar (SMART App Launch 2.2, "Scopes and Launch Context"):
//! `(patient|user|system) "/" (ResourceType|"*") "." permissions ["?" query]`, where
//! permissions is v1 `read` (= `rs`), `write` (= `cud`) or `*` (= `cruds`), or v2 a
//! non-empty subsequence of `cruds` in that order (`rs`, `cr`, `s`, …; `sr`, `rr`, `rx`
//! are invalid). Everything is case-sensitive. A scope string is split on single spaces
//! (RFC 6749 §3.3); empty tokens are dropped; a tab, newline or other control character
//! makes the whole string invalid. Invalid or unknown scopes grant nothing and are kept in
//! [`ScopeSet::ignored`] so the caller can audit them.
//!
//! Several scopes combine as a union, independent of order: a request is permitted if
//! any scope permits it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The FHIR R4 resource type names (for recognising a scope's resource type).
pub const R4_RESOURCE_TYPES: &[&str] = &[
    "Account", "ActivityDefinition", "AdverseEvent", "AllergyIntolerance", "Appointment", "AppointmentResponse", "AuditEvent", "Basic",
    "Binary", "BiologicallyDerivedProduct", "BodyStructure", "Bundle", "CapabilityStatement", "CarePlan", "CareTeam", "CatalogEntry",
    "ChargeItem", "ChargeItemDefinition", "Claim", "ClaimResponse", "ClinicalImpression", "CodeSystem", "Communication",
    "CommunicationRequest", "CompartmentDefinition", "Composition", "ConceptMap", "Condition", "Consent", "Contract", "Coverage",
    "CoverageEligibilityRequest", "CoverageEligibilityResponse", "DetectedIssue", "Device", "DeviceDefinition", "DeviceMetric",
    "DeviceRequest", "DeviceUseStatement", "DiagnosticReport", "DocumentManifest", "DocumentReference", "EffectEvidenceSynthesis",
    "Encounter", "Endpoint", "EnrollmentRequest", "EnrollmentResponse", "EpisodeOfCare", "EventDefinition", "Evidence",
    "EvidenceVariable", "ExampleScenario", "ExplanationOfBenefit", "FamilyMemberHistory", "Flag", "Goal", "GraphDefinition", "Group",
    "GuidanceResponse", "HealthcareService", "ImagingStudy", "Immunization", "ImmunizationEvaluation", "ImmunizationRecommendation",
    "ImplementationGuide", "InsurancePlan", "Invoice", "Library", "Linkage", "List", "Location", "Measure", "MeasureReport", "Media",
    "Medication", "MedicationAdministration", "MedicationDispense", "MedicationKnowledge", "MedicationRequest", "MedicationStatement",
    "MedicinalProduct", "MedicinalProductAuthorization", "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured", "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect", "MessageDefinition", "MessageHeader", "MolecularSequence",
    "NamingSystem", "NutritionOrder", "Observation", "ObservationDefinition", "OperationDefinition", "OperationOutcome", "Organization",
    "OrganizationAffiliation", "Parameters", "Patient", "PaymentNotice", "PaymentReconciliation", "Person", "PlanDefinition",
    "Practitioner", "PractitionerRole", "Procedure", "Provenance", "Questionnaire", "QuestionnaireResponse", "RelatedPerson",
    "RequestGroup", "ResearchDefinition", "ResearchElementDefinition", "ResearchStudy", "ResearchSubject", "RiskAssessment",
    "RiskEvidenceSynthesis", "Schedule", "SearchParameter", "ServiceRequest", "Slot", "Specimen", "SpecimenDefinition",
    "StructureDefinition", "StructureMap", "Subscription", "Substance", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification", "SupplyDelivery", "SupplyRequest", "Task",
    "TerminologyCapabilities", "TestReport", "TestScript", "ValueSet", "VerificationResult", "VisionPrescription",
];

/// The context prefix of a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    /// `patient/`: within one patient's compartment.
    Patient,
    /// `user/`: what the acting user may see.
    User,
    /// `system/`: backend access.
    System,
}

impl Context {
    /// The prefix text.
    pub const fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

/// A FHIR interaction a scope can permit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interaction {
    /// `c`
    Create,
    /// `r`: read by id (and vread, history of an instance).
    Read,
    /// `u`
    Update,
    /// `d`
    Delete,
    /// `s`: search.
    Search,
}

/// The permission letters of a scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Perms {
    /// create
    pub c: bool,
    /// read
    pub r: bool,
    /// update
    pub u: bool,
    /// delete
    pub d: bool,
    /// search
    pub s: bool,
}

impl Perms {
    /// Whether `i` is permitted.
    pub fn allows(self, i: Interaction) -> bool {
        match i {
            Interaction::Create => self.c,
            Interaction::Read => self.r,
            Interaction::Update => self.u,
            Interaction::Delete => self.d,
            Interaction::Search => self.s,
        }
    }

    /// The v2 letters, e.g. `rs`.
    pub fn letters(self) -> String {
        let mut s = String::new();
        for (on, ch) in [(self.c, 'c'), (self.r, 'r'), (self.u, 'u'), (self.d, 'd'), (self.s, 's')] {
            if on {
                s.push(ch);
            }
        }
        s
    }

    fn parse(text: &str) -> Result<(Perms, Syntax), ScopeError> {
        match text {
            "read" => return Ok((Perms { r: true, s: true, ..Perms::default() }, Syntax::V1)),
            "write" => return Ok((Perms { c: true, u: true, d: true, ..Perms::default() }, Syntax::V1)),
            "*" => return Ok((Perms { c: true, r: true, u: true, d: true, s: true }, Syntax::V1)),
            "" => return Err(ScopeError::BadPermissions),
            _ => {}
        }
        let mut p = Perms::default();
        let mut last = 0usize;
        for ch in text.chars() {
            let pos = match ch {
                'c' => 1,
                'r' => 2,
                'u' => 3,
                'd' => 4,
                's' => 5,
                _ => return Err(ScopeError::BadPermissions),
            };
            if pos <= last {
                return Err(ScopeError::BadPermissions);
            }
            last = pos;
            match ch {
                'c' => p.c = true,
                'r' => p.r = true,
                'u' => p.u = true,
                'd' => p.d = true,
                _ => p.s = true,
            }
        }
        Ok((p, Syntax::V2))
    }
}

/// Which grammar a scope was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Syntax {
    /// `read`/`write`/`*`.
    V1,
    /// `cruds` letters.
    V2,
}

/// One parsed scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    /// Context prefix.
    pub context: Context,
    /// Resource type name, or `None` for `*`.
    pub resource: Option<String>,
    /// Permissions.
    pub perms: Perms,
    /// v2 query constraints (`?category=…&…`), as name/value pairs.
    pub query: Vec<(String, String)>,
    /// The grammar used.
    pub syntax: Syntax,
}

impl Scope {
    /// Whether this scope covers `resource_type` (by name or wildcard).
    pub fn covers_type(&self, resource_type: &str) -> bool {
        self.resource.as_deref().is_none_or(|r| r == resource_type)
    }

    /// This scope in v2 syntax, e.g. `system/Patient.rs`.
    pub fn to_v2(&self) -> String {
        let mut s = format!("{}/{}.{}", self.context.as_str(), self.resource.as_deref().unwrap_or("*"), self.perms.letters());
        if !self.query.is_empty() {
            s.push('?');
            s.push_str(&self.query.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&"));
        }
        s
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_v2())
    }
}

/// Why one scope token was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "kebab-case")]
pub enum ScopeError {
    /// Not a resource scope (e.g. `openid`, `launch`, `fhirUser`): not ours to judge.
    #[error("not a resource scope")]
    NotResourceScope,
    /// The context is not exactly `patient`, `user` or `system`.
    #[error("the context must be patient, user or system (lower case)")]
    BadContext,
    /// Not a FHIR R4 resource type name (case-sensitive).
    #[error("unknown resource type")]
    UnknownType,
    /// The permissions are not `read`, `write`, `*` or ordered `cruds` letters.
    #[error("permissions must be read, write, * or letters of cruds in that order")]
    BadPermissions,
    /// The `?query` part is malformed.
    #[error("malformed query constraint")]
    BadQuery,
}

/// Parses one scope token.
pub fn parse_scope(token: &str) -> Result<Scope, ScopeError> {
    let Some((ctx, rest)) = token.split_once('/') else {
        return Err(ScopeError::NotResourceScope);
    };
    let context = match ctx {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ if ctx.eq_ignore_ascii_case("patient") || ctx.eq_ignore_ascii_case("user") || ctx.eq_ignore_ascii_case("system") => {
            return Err(ScopeError::BadContext);
        }
        _ => return Err(ScopeError::NotResourceScope),
    };
    let (body, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let Some((rtype, perms)) = body.split_once('.') else {
        return Err(ScopeError::BadPermissions);
    };
    let resource = if rtype == "*" {
        None
    } else if R4_RESOURCE_TYPES.binary_search(&rtype).is_ok() {
        Some(rtype.to_owned())
    } else {
        return Err(ScopeError::UnknownType);
    };
    let (perms, syntax) = Perms::parse(perms)?;
    let mut q = Vec::new();
    if let Some(query) = query {
        if syntax == Syntax::V1 || query.is_empty() {
            return Err(ScopeError::BadQuery);
        }
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').ok_or(ScopeError::BadQuery)?;
            if k.is_empty() || v.is_empty() {
                return Err(ScopeError::BadQuery);
            }
            q.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(Scope { context, resource, perms, query: q, syntax })
}

/// The result of parsing a scope string: the usable scopes and what was ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeSet {
    /// Scopes that parsed.
    pub scopes: Vec<Scope>,
    /// Tokens that did not, with why (for the audit log). Non-resource scopes such as
    /// `openid` are not listed.
    pub ignored: Vec<(String, ScopeError)>,
    /// Set when the whole string was refused (a tab, newline or control character).
    pub invalid_string: bool,
}

/// How a set of scopes answers one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    /// Not permitted.
    None,
    /// Permitted without constraint.
    Full,
    /// Permitted only within one of these query constraints (OR of ANDs).
    Constrained(Vec<Vec<(String, String)>>),
}

impl ScopeSet {
    /// Parses a space-separated scope string.
    pub fn parse(s: &str) -> ScopeSet {
        if s.chars().any(|c| c.is_control()) {
            return ScopeSet { scopes: Vec::new(), ignored: vec![(s.escape_default().to_string(), ScopeError::BadQuery)], invalid_string: true };
        }
        Self::from_tokens(s.split(' ').filter(|t| !t.is_empty()))
    }

    /// Parses a list of scope tokens (as a configuration file holds them).
    pub fn from_tokens<'a>(tokens: impl IntoIterator<Item = &'a str>) -> ScopeSet {
        let mut set = ScopeSet::default();
        for t in tokens {
            if t.chars().any(|c| c.is_control() || c == ' ') {
                set.ignored.push((t.escape_default().to_string(), ScopeError::BadQuery));
                continue;
            }
            match parse_scope(t) {
                Ok(s) => {
                    if !set.scopes.contains(&s) {
                        set.scopes.push(s);
                    }
                }
                Err(ScopeError::NotResourceScope) => {}
                Err(e) => set.ignored.push((t.to_owned(), e)),
            }
        }
        set
    }

    /// Whether the set permits `interaction` on `resource_type` from one of `contexts`,
    /// and under which constraints. Order of scopes never matters: unconstrained grants
    /// win, constrained ones are collected.
    pub fn grant(&self, contexts: &[Context], resource_type: &str, interaction: Interaction) -> Grant {
        let mut constrained = Vec::new();
        for s in &self.scopes {
            if contexts.contains(&s.context) && s.covers_type(resource_type) && s.perms.allows(interaction) {
                if s.query.is_empty() {
                    return Grant::Full;
                }
                constrained.push(s.query.clone());
            }
        }
        if constrained.is_empty() { Grant::None } else { Grant::Constrained(constrained) }
    }

    /// Shorthand: whether any grant exists.
    pub fn permits(&self, contexts: &[Context], resource_type: &str, interaction: Interaction) -> bool {
        self.grant(contexts, resource_type, interaction) != Grant::None
    }

    /// The scopes as v2 strings.
    pub fn to_v2_strings(&self) -> Vec<String> {
        self.scopes.iter().map(Scope::to_v2).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Interaction::{Read, Search};

    const SYS: &[Context] = &[Context::System];

    fn perms(scope: &str) -> Option<(bool, bool)> {
        let set = ScopeSet::parse(scope);
        if set.scopes.is_empty() {
            return None;
        }
        Some((set.permits(SYS, "Patient", Read), set.permits(SYS, "Patient", Search)))
    }

    #[test]
    fn resource_types_list_is_sorted_for_binary_search() {
        let mut sorted = R4_RESOURCE_TYPES.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, R4_RESOURCE_TYPES);
    }

    /// Pitfalls case 26, for every context.
    #[test]
    fn pitfall_26_v1_and_v2_grammar() {
        for ctx in ["patient", "user", "system"] {
            let c = match ctx {
                "patient" => Context::Patient,
                "user" => Context::User,
                _ => Context::System,
            };
            let p = |suffix: &str| {
                let set = ScopeSet::parse(&format!("{ctx}/Patient{suffix}"));
                if set.scopes.is_empty() {
                    None
                } else {
                    Some((set.permits(&[c], "Patient", Read), set.permits(&[c], "Patient", Search), set.permits(&[c], "Patient", Interaction::Create)))
                }
            };
            assert_eq!(p(".read"), Some((true, true, false)), "{ctx} read");
            assert_eq!(p(".rs"), Some((true, true, false)));
            assert_eq!(p(".r"), Some((true, false, false)));
            assert_eq!(p(".s"), Some((false, true, false)));
            assert_eq!(p(".cruds"), Some((true, true, true)));
            assert_eq!(p(".*"), Some((true, true, true)));
            assert_eq!(p(".write"), Some((false, false, true)));
            for bad in [".sr", ".rr", ".rx", ".", "", ".read.rs", ".R", ".READ"] {
                let set = ScopeSet::parse(&format!("{ctx}/Patient{bad}"));
                assert!(set.scopes.is_empty(), "{ctx}/Patient{bad} must grant nothing");
                assert_eq!(set.ignored.len(), 1, "{ctx}/Patient{bad} is reported");
            }
        }
    }

    /// Pitfalls case 27: union, order-independent, nothing extra.
    #[test]
    fn pitfall_27_union_and_wildcards() {
        let a = ScopeSet::parse("system/DocumentReference.read system/Patient.read");
        assert!(!a.permits(SYS, "Procedure", Search));
        assert!(a.permits(SYS, "DocumentReference", Search));
        for s in ["patient/*.read system/*.read", "system/*.read patient/*.read"] {
            let set = ScopeSet::parse(s);
            assert!(set.permits(SYS, "Observation", Search), "{s}");
            assert!(set.permits(SYS, "Observation", Read), "{s}");
        }
        let only_patient = ScopeSet::parse("patient/*.read");
        assert!(!only_patient.permits(SYS, "Observation", Search), "patient/ does not grant system-level access");
        let rs = ScopeSet::parse("system/*.rs");
        assert!(rs.permits(SYS, "Coverage", Read) && rs.permits(SYS, "Coverage", Search));
        let r = ScopeSet::parse("system/*.r");
        assert!(r.permits(SYS, "Coverage", Read) && !r.permits(SYS, "Coverage", Search));
        let obs = ScopeSet::parse("system/Observation.rs");
        assert!(!obs.permits(SYS, "Patient", Read), "an include target is not granted by the base type");
    }

    /// Pitfalls case 29: case-sensitivity, unknown types, separators.
    #[test]
    fn pitfall_29_case_types_and_separators() {
        for s in ["system/allergyintolerance.read", "SYSTEM/AllergyIntolerance.read", "system/AllergyIntolerance.READ"] {
            let set = ScopeSet::parse(s);
            assert!(!set.permits(SYS, "AllergyIntolerance", Read), "{s}");
            assert_eq!(set.ignored.len(), 1, "{s} reported");
        }
        assert!(ScopeSet::parse("system/AllergyIntolerance.read").permits(SYS, "AllergyIntolerance", Search));
        let foo = ScopeSet::parse("system/Foo.read");
        assert!(foo.scopes.is_empty());
        assert_eq!(foo.ignored, vec![("system/Foo.read".to_owned(), ScopeError::UnknownType)]);
        let doubled = ScopeSet::parse("system/Patient.read  system/Condition.rs");
        assert_eq!(doubled.scopes.len(), 2);
        assert!(doubled.ignored.is_empty());
        for sep in ["\t", "\n", "\r\n"] {
            let set = ScopeSet::parse(&format!("system/Patient.read{sep}system/Condition.rs"));
            assert!(set.invalid_string && set.scopes.is_empty(), "{sep:?} makes the whole string invalid");
        }
        assert!(ScopeSet::parse("openid fhirUser launch/patient").ignored.is_empty(), "non-resource scopes are not errors");
    }

    #[test]
    fn v2_query_constraints() {
        let set = ScopeSet::parse("system/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory");
        match set.grant(SYS, "Observation", Search) {
            Grant::Constrained(c) => assert_eq!(c, vec![vec![("category".to_owned(), "http://terminology.hl7.org/CodeSystem/observation-category|laboratory".to_owned())]]),
            other => panic!("{other:?}"),
        }
        let both = ScopeSet::parse("system/Observation.rs?category=x system/Observation.rs");
        assert_eq!(both.grant(SYS, "Observation", Search), Grant::Full, "an unconstrained scope wins whatever the order");
        assert!(ScopeSet::parse("system/Observation.read?category=x").scopes.is_empty(), "v1 takes no query");
        assert!(ScopeSet::parse("system/Observation.rs?category").scopes.is_empty());
        assert_eq!(perms("system/Patient.rs"), Some((true, true)));
    }

    #[test]
    fn v2_rendering() {
        assert_eq!(parse_scope("system/Patient.read").unwrap().to_v2(), "system/Patient.rs");
        assert_eq!(parse_scope("user/*.*").unwrap().to_v2(), "user/*.cruds");
    }
}
