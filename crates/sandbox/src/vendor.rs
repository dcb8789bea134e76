//! The two vendor styles and their paths; the eleven resource types served are
//! [`medicodax_wire::ResourceType`].

pub use medicodax_wire::ResourceType;
use std::fmt;

/// Which EHR a part of the sandbox imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Vendor {
    /// Epic-like: FHIR base `/epic/api/FHIR/R4`, token endpoint `/epic/oauth2/token`.
    Epic,
    /// eClinicalWorks-like: FHIR base `/ecw/fhir/r4/PRAC01`, token endpoint `/ecw/oauth2/token`.
    EClinicalWorks,
}

impl Vendor {
    /// Both vendors, Epic first.
    pub const ALL: [Vendor; 2] = [Vendor::Epic, Vendor::EClinicalWorks];

    /// A short lower-case name (`epic`, `eclinicalworks`), as configuration files spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Vendor::Epic => "epic",
            Vendor::EClinicalWorks => "eclinicalworks",
        }
    }

    /// The path prefix of everything this vendor serves (`/epic` or `/ecw`).
    pub const fn prefix(self) -> &'static str {
        match self {
            Vendor::Epic => "/epic",
            Vendor::EClinicalWorks => "/ecw",
        }
    }

    /// The FHIR base path (no trailing slash).
    pub const fn fhir_path(self) -> &'static str {
        match self {
            Vendor::Epic => "/epic/api/FHIR/R4",
            Vendor::EClinicalWorks => "/ecw/fhir/r4/PRAC01",
        }
    }

    /// The token endpoint path.
    pub const fn token_path(self) -> &'static str {
        match self {
            Vendor::Epic => "/epic/oauth2/token",
            Vendor::EClinicalWorks => "/ecw/oauth2/token",
        }
    }

    /// The `realm` used in `WWW-Authenticate` challenges.
    pub const fn realm(self) -> &'static str {
        match self {
            Vendor::Epic => "epic-sandbox",
            Vendor::EClinicalWorks => "ecw-sandbox",
        }
    }

    /// The index of this vendor in [`Vendor::ALL`], for per-vendor arrays.
    pub(crate) const fn index(self) -> usize {
        match self {
            Vendor::Epic => 0,
            Vendor::EClinicalWorks => 1,
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The position of a type in [`ResourceType::ALL`], for per-type arrays.
pub(crate) trait TypeIndex {
    /// The index.
    fn index(self) -> usize;
}

impl TypeIndex for ResourceType {
    fn index(self) -> usize {
        // A fieldless enum declared in the order of `ResourceType::ALL` (tested below).
        self as usize
    }
}

/// The type named exactly `name` (case-sensitive), if it is one of the eleven.
pub(crate) fn parse_type(name: &str) -> Option<ResourceType> {
    name.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_round_trip_and_index_matches_order() {
        for (i, t) in ResourceType::ALL.into_iter().enumerate() {
            assert_eq!(parse_type(t.as_str()), Some(t));
            assert_eq!(t.index(), i);
        }
        assert_eq!(parse_type("patient"), None, "case-sensitive");
        assert_eq!(parse_type("Practitioner"), None, "not one of the eleven");
    }

    #[test]
    fn vendor_paths_sit_under_their_prefix() {
        for v in Vendor::ALL {
            assert!(v.fhir_path().starts_with(v.prefix()));
            assert!(v.token_path().starts_with(v.prefix()));
            assert_eq!(Vendor::ALL[v.index()], v);
        }
    }
}
