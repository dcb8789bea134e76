//! FHIR R4 client for the eleven resource types: read, search, paging, OperationOutcome, vendor quirks
