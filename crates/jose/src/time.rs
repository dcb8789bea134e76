//! Time-window rules for JWT claims, with an explicit leeway and maximum lifetime.
//!
//! `jsonwebtoken`'s defaults (60 s leeway, `iat` unchecked, `nbf` opt-in) are exactly the
//! ones field reports warn about, so the rules are spelled out here and tested against
//! the pitfalls matrix (case 34).

/// The rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeRules {
    /// Seconds of clock skew tolerated on each bound.
    pub leeway: i64,
    /// The longest `exp - iat` accepted.
    pub max_lifetime: i64,
}

impl TimeRules {
    /// The gateway's rules for tool calls: 30 s leeway, 300 s lifetime.
    pub const CALLS: TimeRules = TimeRules { leeway: 30, max_lifetime: 300 };
}

/// Which time rule a token broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// `exp` is in the past beyond the leeway.
    #[error("the token expired {0} s ago (leeway included); sign a fresh one")]
    Expired(i64),
    /// `nbf` is in the future beyond the leeway.
    #[error("the token is not valid yet (nbf is {0} s ahead); check the signer's clock")]
    NotYetValid(i64),
    /// `iat` is in the future beyond the leeway.
    #[error("the token was issued {0} s in the future; check the signer's clock")]
    IssuedInFuture(i64),
    /// `exp - iat` exceeds the maximum lifetime.
    #[error("the token lifetime exp - iat = {0} s exceeds the maximum of {1} s")]
    TooLong(i64, i64),
    /// `exp` is before `iat`.
    #[error("exp is before iat")]
    ExpBeforeIat,
}

impl TimeRules {
    /// Checks `iat`, optional `nbf` and `exp` against `now` (all Unix seconds).
    pub fn check(&self, now: i64, iat: i64, nbf: Option<i64>, exp: i64) -> Result<(), TimeError> {
        if exp < iat {
            return Err(TimeError::ExpBeforeIat);
        }
        if exp.saturating_sub(iat) > self.max_lifetime {
            return Err(TimeError::TooLong(exp.saturating_sub(iat), self.max_lifetime));
        }
        if now > exp.saturating_add(self.leeway) {
            return Err(TimeError::Expired(now - exp));
        }
        if iat > now.saturating_add(self.leeway) {
            return Err(TimeError::IssuedInFuture(iat - now));
        }
        if let Some(nbf) = nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(TimeError::NotYetValid(nbf - now));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_767_225_600;

    /// Pitfalls case 34, time lines, with L = 30 s and a 300 s lifetime.
    #[test]
    fn pitfall_34_time_matrix() {
        let r = TimeRules::CALLS;
        assert_eq!(r.check(NOW, NOW, None, NOW + 120), Ok(()));
        // exp = NOW-31 rejected, NOW-29 accepted (iat kept 60 s before exp).
        assert!(matches!(r.check(NOW, NOW - 91, None, NOW - 31), Err(TimeError::Expired(31))));
        assert_eq!(r.check(NOW, NOW - 89, None, NOW - 29), Ok(()));
        // nbf = NOW+120 rejected, NOW+20 accepted.
        assert!(matches!(r.check(NOW, NOW, Some(NOW + 120), NOW + 200), Err(TimeError::NotYetValid(120))));
        assert_eq!(r.check(NOW, NOW, Some(NOW + 20), NOW + 200), Ok(()));
        // iat = NOW+20 accepted, NOW+120 rejected.
        assert_eq!(r.check(NOW, NOW + 20, None, NOW + 200), Ok(()));
        assert!(matches!(r.check(NOW, NOW + 120, None, NOW + 200), Err(TimeError::IssuedInFuture(120))));
        // iat = NOW-3600, exp = NOW+60: lifetime 3660 > 300.
        assert_eq!(r.check(NOW, NOW - 3600, None, NOW + 60), Err(TimeError::TooLong(3660, 300)));
        assert_eq!(r.check(NOW, NOW, None, NOW - 1), Err(TimeError::ExpBeforeIat));
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let r = TimeRules::CALLS;
        assert!(r.check(i64::MAX, 0, None, 300).is_err());
        assert!(r.check(0, i64::MAX - 10, Some(i64::MAX), i64::MAX).is_err());
    }
}
