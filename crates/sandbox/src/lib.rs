//! Embedded Epic-like and eClinicalWorks-like EHR sandboxes over the bundled Synthea patients
