//! The bundled Synthea patients, loaded once per process and split between the vendors.
//!
//! The twelve transaction Bundles under `data/synthea-r4/` are embedded at build time.
//! Loading decompresses and parses them (in parallel), resolves every `urn:uuid:`
//! reference to `Type/id` through the Bundle's `fullUrl`s, keeps only the eleven served
//! types, adds an ICD-10-CM coding to each Epic-side Condition whose SNOMED CT code is in
//! the bundled crosswalk, indexes each resource for search, and stores it as its
//! serialized JSON (so unknown elements pass through untouched and nothing is re-parsed
//! per request). Patients go to Epic and eClinicalWorks alternately by sorted id.

use crate::index::{IndexValue, index_resource, patient_link, specs, walk};
use crate::vendor::{ResourceType, TypeIndex, Vendor};
use flate2::read::GzDecoder;
use serde_json::Value;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::OnceLock;

/// The ICD-10-CM code system URI added to Epic-side Conditions.
pub const ICD10CM_SYSTEM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
/// The SNOMED CT code system URI.
pub const SNOMED_SYSTEM: &str = "http://snomed.info/sct";

macro_rules! bundle {
    ($name:literal) => {
        ($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/synthea-r4/", $name, ".json.gz")).as_slice())
    };
}

/// The embedded bundles, by file stem.
pub(crate) const BUNDLES: [(&str, &[u8]); 12] = [
    bundle!("Antone_Schuppe_eca6c8de"),
    bundle!("Bennie_Leffler_81c88713"),
    bundle!("Berniece_Muller_a27fc1fe"),
    bundle!("Guillermina_Johnston_a7bfd3f1"),
    bundle!("Hans_Welch_940adc62"),
    bundle!("Hipolito_Lindgren_fcc0050c"),
    bundle!("Magdalena_Gamboa_19691a9c"),
    bundle!("Steven_Daniel_68273439"),
    bundle!("Sunny_Streich_0f57aad0"),
    bundle!("Tod_Kemmer_b70a4816"),
    bundle!("Tyrone_Beatty_791b9bdc"),
    bundle!("Warner_MacGyver_9c5a4559"),
];

const CROSSWALK: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/snomed-icd10cm-crosswalk.tsv.gz"));

/// Why the embedded data could not be loaded (a build defect, never user input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// A bundle or the crosswalk did not decompress.
    #[error("embedded file {0} does not decompress")]
    Decompress(String),
    /// A bundle is not the JSON expected.
    #[error("embedded bundle {file} is malformed: {reason}")]
    Malformed {
        /// The bundle's file stem.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// A loader thread failed.
    #[error("a data loader thread failed")]
    Loader,
}

/// One encounter, for building worklists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncounterSummary {
    /// The Encounter id.
    pub id: String,
    /// `period.start`, as written.
    pub start: Option<String>,
    /// `period.end`, as written.
    pub end: Option<String>,
    /// `class.code` (`AMB`, `EMER`, `IMP`, …).
    pub class_code: Option<String>,
    /// The first `type` coding's display.
    pub type_display: Option<String>,
}

/// One patient as a vendor side serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatientSummary {
    /// The Patient id.
    pub id: String,
    /// Given and family names of the first `name`.
    pub name: String,
    /// `birthDate`.
    pub birth_date: Option<String>,
    /// `gender`.
    pub gender: Option<String>,
    /// The side that serves this patient.
    pub vendor: Vendor,
    /// Encounters, earliest first.
    pub encounters: Vec<EncounterSummary>,
    /// How many resources of each served type belong to the patient (Patient counts 1).
    pub resource_counts: BTreeMap<ResourceType, usize>,
}

/// What loading found, for the performance note and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Bundles loaded.
    pub bundles: usize,
    /// Entries in all bundles (all types).
    pub bundle_entries: usize,
    /// Resources served (the eleven types), both sides together.
    pub resources: usize,
    /// Resources served per side, in [`Vendor::ALL`] order.
    pub resources_per_vendor: [usize; 2],
    /// ICD-10-CM codings added to Epic-side Conditions.
    pub icd10cm_codings_added: usize,
    /// `urn:uuid:` references no `fullUrl` resolved (left as written).
    pub unresolved_references: usize,
}

/// One stored resource.
pub(crate) struct Record {
    pub id: Box<str>,
    pub patient: Option<Box<str>>,
    pub json: Box<RawValue>,
    pub index: Box<[(u8, IndexValue)]>,
}

/// The resources of one type on one side.
#[derive(Default)]
pub(crate) struct TypeData {
    pub records: Vec<Record>,
    pub by_id: HashMap<Box<str>, u32>,
    pub by_patient: HashMap<Box<str>, Vec<u32>>,
}

impl TypeData {
    fn push(&mut self, rec: Record) {
        let Ok(pos) = u32::try_from(self.records.len()) else { return };
        self.by_id.insert(rec.id.clone(), pos);
        if let Some(p) = &rec.patient {
            self.by_patient.entry(p.clone()).or_default().push(pos);
        }
        self.records.push(rec);
    }
}

/// One vendor side's data.
#[derive(Default)]
pub(crate) struct Side {
    pub types: [TypeData; 11],
    pub patients: Vec<PatientSummary>,
}

/// The bundled patients, split between the two vendor sides.
pub struct Dataset {
    sides: [Side; 2],
    stats: LoadStats,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset").field("stats", &self.stats).finish_non_exhaustive()
    }
}

static DATASET: OnceLock<Result<Dataset, DataError>> = OnceLock::new();

impl Dataset {
    /// The embedded dataset, loaded on first use and shared by every sandbox in the process.
    pub fn embedded() -> Result<&'static Dataset, DataError> {
        DATASET.get_or_init(load).as_ref().map_err(Clone::clone)
    }

    /// What loading found.
    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }

    /// The patients a side serves, by id.
    pub fn patients(&self, vendor: Vendor) -> &[PatientSummary] {
        &self.sides[vendor.index()].patients
    }

    /// The side that serves `patient_id`, if any.
    pub fn vendor_of(&self, patient_id: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| self.side(*v).types[ResourceType::Patient.index()].by_id.contains_key(patient_id))
    }

    /// How many resources of `rtype` a side serves, for one patient or in all.
    pub fn count(&self, vendor: Vendor, rtype: ResourceType, patient_id: Option<&str>) -> usize {
        let td = &self.side(vendor).types[rtype.index()];
        match (rtype, patient_id) {
            (_, None) => td.records.len(),
            (ResourceType::Patient, Some(p)) => usize::from(td.by_id.contains_key(p)),
            (_, Some(p)) => td.by_patient.get(p).map_or(0, Vec::len),
        }
    }

    /// A served resource as JSON (what a read returns).
    pub fn resource(&self, vendor: Vendor, rtype: ResourceType, id: &str) -> Option<Value> {
        self.record(vendor, rtype, id).and_then(|r| serde_json::from_str(r.json.get()).ok())
    }

    pub(crate) fn side(&self, vendor: Vendor) -> &Side {
        &self.sides[vendor.index()]
    }

    pub(crate) fn record(&self, vendor: Vendor, rtype: ResourceType, id: &str) -> Option<&Record> {
        let td = &self.side(vendor).types[rtype.index()];
        td.by_id.get(id).and_then(|&i| td.records.get(i as usize))
    }
}

fn gunzip(name: &str, bytes: &[u8]) -> Result<Vec<u8>, DataError> {
    let mut out = Vec::with_capacity(bytes.len() * 12);
    GzDecoder::new(bytes).read_to_end(&mut out).map_err(|_| DataError::Decompress(name.to_owned()))?;
    Ok(out)
}

/// SNOMED CT code → (ICD-10-CM code, title), skipping `NONE` rows.
pub(crate) fn crosswalk() -> Result<HashMap<String, (String, String)>, DataError> {
    let text = gunzip("snomed-icd10cm-crosswalk.tsv.gz", CROSSWALK)?;
    let text = String::from_utf8(text).map_err(|_| DataError::Malformed { file: "snomed-icd10cm-crosswalk".into(), reason: "not UTF-8".into() })?;
    let mut map = HashMap::new();
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [snomed, _, icd, title, ..] = cols.as_slice()
            && !icd.is_empty()
            && *icd != "NONE"
        {
            map.insert((*snomed).to_owned(), ((*icd).to_owned(), (*title).to_owned()));
        }
    }
    Ok(map)
}

fn malformed(file: &str, reason: &str) -> DataError {
    DataError::Malformed { file: file.to_owned(), reason: reason.to_owned() }
}

/// Parses one bundle and finds its Patient id.
fn parse_bundle(name: &'static str, gz: &[u8]) -> Result<(&'static str, Value, String), DataError> {
    let bytes = gunzip(name, gz)?;
    let bundle: Value = serde_json::from_slice(&bytes).map_err(|e| malformed(name, &e.to_string()))?;
    let patient = bundle
        .get("entry")
        .and_then(Value::as_array)
        .and_then(|es| es.iter().find(|e| e.pointer("/resource/resourceType").and_then(Value::as_str) == Some("Patient")))
        .and_then(|e| e.pointer("/resource/id"))
        .and_then(Value::as_str)
        .ok_or_else(|| malformed(name, "no Patient entry"))?
        .to_owned();
    Ok((name, bundle, patient))
}

/// Replaces `urn:uuid:` references with `Type/id`; returns how many stayed unresolved.
fn resolve_references(v: &mut Value, urls: &HashMap<String, String>) -> usize {
    let mut unresolved = 0;
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "reference"
                    && let Value::String(r) = child
                    && r.starts_with("urn:uuid:")
                {
                    match urls.get(r.as_str()) {
                        Some(resolved) => *r = resolved.clone(),
                        None => unresolved += 1,
                    }
                } else {
                    unresolved += resolve_references(child, urls);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                unresolved += resolve_references(item, urls);
            }
        }
        _ => {}
    }
    unresolved
}

/// Adds the crosswalk's ICD-10-CM coding next to each mapped SNOMED CT coding.
fn add_icd10cm(condition: &mut Value, crosswalk: &HashMap<String, (String, String)>) -> usize {
    let Some(Value::Array(codings)) = condition.pointer_mut("/code/coding") else { return 0 };
    if codings.iter().any(|c| c.get("system").and_then(Value::as_str) == Some(ICD10CM_SYSTEM)) {
        return 0;
    }
    let adds: Vec<Value> = codings
        .iter()
        .filter(|c| c.get("system").and_then(Value::as_str) == Some(SNOMED_SYSTEM))
        .filter_map(|c| c.get("code").and_then(Value::as_str))
        .filter_map(|code| crosswalk.get(code))
        .map(|(icd, title)| serde_json::json!({"system": ICD10CM_SYSTEM, "code": icd, "display": title}))
        .collect();
    let n = adds.len();
    codings.extend(adds);
    n
}

struct Processed {
    records: Vec<(ResourceType, Record)>,
    summary: PatientSummary,
    entries: usize,
    icd_added: usize,
    unresolved: usize,
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn process_bundle(name: &str, mut bundle: Value, vendor: Vendor, crosswalk: &HashMap<String, (String, String)>) -> Result<Processed, DataError> {
    let entries = bundle.get_mut("entry").and_then(Value::as_array_mut).ok_or_else(|| malformed(name, "no entry array"))?;
    let mut urls = HashMap::with_capacity(entries.len());
    for e in entries.iter() {
        if let (Some(url), Some(t), Some(id)) = (str_at(e, "/fullUrl"), str_at(e, "/resource/resourceType"), str_at(e, "/resource/id")) {
            urls.insert(url.to_owned(), format!("{t}/{id}"));
        }
    }
    let mut out = Processed {
        records: Vec::new(),
        summary: PatientSummary {
            id: String::new(),
            name: String::new(),
            birth_date: None,
            gender: None,
            vendor,
            encounters: Vec::new(),
            resource_counts: BTreeMap::new(),
        },
        entries: entries.len(),
        icd_added: 0,
        unresolved: 0,
    };
    for e in entries.iter_mut() {
        let Some(mut resource) = e.get_mut("resource").map(Value::take) else { continue };
        let Some(rtype) = resource.get("resourceType").and_then(Value::as_str).and_then(crate::vendor::parse_type) else { continue };
        let Some(id) = resource.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(malformed(name, "a resource has no id"));
        };
        out.unresolved += resolve_references(&mut resource, &urls);
        let patient = match patient_link(rtype) {
            None => Some(id.clone()),
            Some((field, _)) => {
                let mut refs = Vec::new();
                walk(&resource, field, &mut refs);
                refs.first().and_then(|r| r.get("reference")).and_then(Value::as_str).and_then(|r| r.strip_prefix("Patient/")).map(str::to_owned)
            }
        };
        match rtype {
            ResourceType::Patient => {
                let given = resource.pointer("/name/0/given").and_then(Value::as_array).map(|g| g.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" "));
                let family = str_at(&resource, "/name/0/family");
                out.summary.id = id.clone();
                out.summary.name = [given.as_deref(), family].into_iter().flatten().collect::<Vec<_>>().join(" ");
                out.summary.birth_date = str_at(&resource, "/birthDate").map(str::to_owned);
                out.summary.gender = str_at(&resource, "/gender").map(str::to_owned);
            }
            ResourceType::Encounter => out.summary.encounters.push(EncounterSummary {
                id: id.clone(),
                start: str_at(&resource, "/period/start").map(str::to_owned),
                end: str_at(&resource, "/period/end").map(str::to_owned),
                class_code: str_at(&resource, "/class/code").map(str::to_owned),
                type_display: str_at(&resource, "/type/0/coding/0/display").map(str::to_owned),
            }),
            ResourceType::Condition if vendor == Vendor::Epic => out.icd_added += add_icd10cm(&mut resource, crosswalk),
            _ => {}
        }
        *out.summary.resource_counts.entry(rtype).or_default() += 1;
        let index = index_resource(&resource, specs(rtype)).into_boxed_slice();
        let json = serde_json::value::to_raw_value(&resource).map_err(|e| malformed(name, &e.to_string()))?;
        out.records.push((rtype, Record { id: id.into(), patient: patient.map(Into::into), json, index }));
    }
    out.summary.encounters.sort_by(|a, b| a.start.cmp(&b.start).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The side of the `i`-th patient in sorted order: Epic, eClinicalWorks, Epic, …
fn side_of(i: usize) -> Vendor {
    if i.is_multiple_of(2) { Vendor::Epic } else { Vendor::EClinicalWorks }
}

fn load() -> Result<Dataset, DataError> {
    let crosswalk = crosswalk()?;
    let parsed: Vec<Result<(&'static str, Value, String), DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = BUNDLES.iter().map(|&(name, gz)| s.spawn(move || parse_bundle(name, gz))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(DataError::Loader))).collect()
    });
    let mut parsed = parsed.into_iter().collect::<Result<Vec<_>, _>>()?;
    parsed.sort_by(|a, b| a.2.cmp(&b.2));
    let crosswalk = &crosswalk;
    let processed: Vec<Result<Processed, DataError>> = std::thread::scope(|s| {
        let handles: Vec<_> = parsed
            .into_iter()
            .enumerate()
            .map(|(i, (name, bundle, _))| {
                let vendor = side_of(i);
                s.spawn(move || process_bundle(name, bundle, vendor, crosswalk))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Err(DataError::Loader))).collect()
    });
    let mut sides: [Side; 2] = Default::default();
    let mut stats = LoadStats { bundles: BUNDLES.len(), ..LoadStats::default() };
    for (i, p) in processed.into_iter().enumerate() {
        let p = p?;
        let vendor = side_of(i);
        let side = &mut sides[vendor.index()];
        stats.bundle_entries += p.entries;
        stats.icd10cm_codings_added += p.icd_added;
        stats.unresolved_references += p.unresolved;
        stats.resources += p.records.len();
        stats.resources_per_vendor[vendor.index()] += p.records.len();
        for (t, rec) in p.records {
            side.types[t.index()].push(rec);
        }
        side.patients.push(p.summary);
    }
    Ok(Dataset { sides, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_bundle_is_embedded() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/synthea-r4");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("data dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json.gz").map(str::to_owned))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = BUNDLES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(embedded, on_disk);
    }

    #[test]
    fn crosswalk_skips_none_rows() {
        let cw = crosswalk().expect("crosswalk");
        assert_eq!(cw.get("9014002"), Some(&("L40.9".to_owned(), "Psoriasis, unspecified".to_owned())));
        assert!(!cw.contains_key("160903007"), "NONE rows are skipped (full-time employment)");
        assert_eq!(cw.len(), 90 - 6, "90 rows, 6 of them NONE");
    }

    #[test]
    fn references_resolve_to_type_and_id() {
        let urls = HashMap::from([("urn:uuid:p1".to_owned(), "Patient/p1".to_owned())]);
        let mut v = serde_json::json!({"subject": {"reference": "urn:uuid:p1"}, "x": [{"reference": "urn:uuid:gone"}], "y": {"reference": "Practitioner/7"}});
        assert_eq!(resolve_references(&mut v, &urls), 1);
        assert_eq!(v["subject"]["reference"], "Patient/p1");
        assert_eq!(v["x"][0]["reference"], "urn:uuid:gone");
        assert_eq!(v["y"]["reference"], "Practitioner/7");
    }

    #[test]
    fn dataset_splits_alternately_and_resolves_everything() {
        let d = Dataset::embedded().expect("dataset");
        let s = d.stats();
        assert_eq!(s.bundles, 12);
        assert_eq!(s.resources, 18_977, "the eleven types across all bundles");
        assert_eq!(s.resources_per_vendor[0] + s.resources_per_vendor[1], s.resources);
        assert_eq!(s.unresolved_references, 0);
        let mut all: Vec<(String, Vendor)> = Vendor::ALL.iter().flat_map(|v| d.patients(*v).iter().map(|p| (p.id.clone(), p.vendor))).collect();
        all.sort();
        assert_eq!(all.len(), 12);
        for (i, (_, v)) in all.iter().enumerate() {
            assert_eq!(*v, Vendor::ALL[i % 2], "patient {i} by sorted id");
        }
        // Hans Welch: index 10 in sorted order, so Epic.
        let hans = d.patients(Vendor::Epic).iter().find(|p| p.id == "cff45905-1e78-4259-a5ba-71052b953ca3").expect("Hans on Epic");
        assert_eq!(hans.name, "Hans Welch");
        assert_eq!(hans.encounters.len(), 10);
        assert_eq!(hans.resource_counts.get(&ResourceType::Observation), Some(&156));
        assert_eq!(d.count(Vendor::Epic, ResourceType::Observation, Some(&hans.id)), 156);
        assert_eq!(d.count(Vendor::EClinicalWorks, ResourceType::Observation, Some(&hans.id)), 0);
        assert!(hans.encounters.windows(2).all(|w| w[0].start <= w[1].start));
    }

    #[test]
    fn epic_conditions_carry_icd10cm_and_ecw_conditions_do_not() {
        let d = Dataset::embedded().expect("dataset");
        assert!(d.stats().icd10cm_codings_added > 0);
        let systems = |v: Vendor| {
            let mut with_icd = 0;
            for rec in &d.side(v).types[ResourceType::Condition.index()].records {
                let c: Value = serde_json::from_str(rec.json.get()).expect("json");
                let codings = c["code"]["coding"].as_array().expect("codings");
                if codings.iter().any(|x| x["system"] == ICD10CM_SYSTEM) {
                    with_icd += 1;
                }
                assert!(codings.iter().any(|x| x["system"] == SNOMED_SYSTEM), "SNOMED CT is kept");
                assert!(!c["subject"]["reference"].as_str().unwrap_or("").starts_with("urn:"));
            }
            with_icd
        };
        assert_eq!(systems(Vendor::EClinicalWorks), 0);
        assert_eq!(systems(Vendor::Epic), d.stats().icd10cm_codings_added);
        // Medication review due (314529007) is a NONE row: no ICD-10-CM coding.
        let hans_conditions = &d.side(Vendor::Epic).types[ResourceType::Condition.index()];
        let rec = hans_conditions.by_id.get("41cf4a95-face-4230-a3dc-f7a521d784e6").map(|&i| &hans_conditions.records[i as usize]).expect("condition");
        let c: Value = serde_json::from_str(rec.json.get()).expect("json");
        assert_eq!(c["code"]["coding"].as_array().map(Vec::len), Some(1));
    }
}
