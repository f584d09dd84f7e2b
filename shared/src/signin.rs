//! Sign-in links for the web console: `crmctl user login` mints a one-time code for a user
//! (`wcrs_<tenant>_<code id>_<secret>`, only its hash stored, valid minutes), printed inside a
//! console link's fragment (`/#signin=<code>`: a fragment never reaches a server or its logs).
//! The console trades the code once (`POST /v1/sessions`) for a session key: a key of the user,
//! with the user's role, that expires after [`SESSION_TTL`] and follows the user like any of
//! their keys (a disabled user's sessions end at once).

use chrono::{DateTime, Duration, Utc};

/// How long a session key works.
pub const SESSION_TTL: Duration = Duration::hours(12);
/// How long a sign-in code may wait to be used, by default and at most.
pub const CODE_TTL: Duration = Duration::minutes(15);
pub const MAX_CODE_TTL: Duration = Duration::hours(1);

/// A stored sign-in code (never the code itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigninCode {
    pub tenant_id: String,
    pub code_id: String,
    pub code_hash: String,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl SigninCode {
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }
}
