//! Hub tokens and the access rules of the Hub: a user owns the namespace of
//! its own name; private things are visible to their owner only; anonymous
//! callers of private things get 401, other users 404; writing needs a write
//! token of the owner.

use std::collections::HashMap;
use std::str::FromStr;

use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};

/// A token the emulator accepts: `USER:VALUE:read|write` on the command line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    pub user: String,
    pub value: String,
    pub write: bool,
}

impl FromStr for TokenSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ':');
        let (Some(user), Some(value), Some(role)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("expected USER:VALUE:read|write".into());
        };
        let write = match role {
            "read" => false,
            "write" => true,
            other => return Err(format!("role must be read or write, not {other:?}")),
        };
        if user.is_empty() || value.is_empty() {
            return Err("user and token value must not be empty".into());
        }
        Ok(Self { user: user.into(), value: value.into(), write })
    }
}

/// Who is calling, from the `Authorization` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Anonymous,
    User {
        name: String,
        write: bool,
    },
    /// A token was sent but the emulator does not know it.
    Invalid,
}

#[derive(Default, Clone)]
pub struct Tokens {
    by_value: HashMap<String, TokenSpec>,
}

impl Tokens {
    pub fn new(specs: &[TokenSpec]) -> Self {
        Self { by_value: specs.iter().map(|t| (t.value.clone(), t.clone())).collect() }
    }

    pub fn caller(&self, headers: &HeaderMap) -> Caller {
        match bearer(headers) {
            None => Caller::Anonymous,
            Some(value) => match self.by_value.get(value) {
                Some(t) => Caller::User { name: t.user.clone(), write: t.write },
                None => Caller::Invalid,
            },
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?.trim();
    (!token.is_empty()).then_some(token)
}

impl Caller {
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::User { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Read access to a thing in `namespace`; `not_found` is the error a stranger sees.
    pub fn check_read(&self, namespace: Option<&str>, private: bool, not_found: ApiError) -> ApiResult<()> {
        match self {
            Caller::Invalid => Err(invalid_token()),
            _ if !private => Ok(()),
            Caller::Anonymous => Err(ApiError { status: axum::http::StatusCode::UNAUTHORIZED, ..not_found }),
            Caller::User { name, .. } if Some(name.as_str()) == namespace => Ok(()),
            Caller::User { .. } => Err(not_found),
        }
    }

    /// Write access to a thing in `namespace` (which may not exist yet).
    pub fn check_write(&self, namespace: Option<&str>, private: bool, not_found: ApiError) -> ApiResult<()> {
        match self {
            Caller::Invalid => Err(invalid_token()),
            Caller::Anonymous => Err(ApiError::unauthorized("You must be authenticated to write")),
            Caller::User { name, write } => {
                if Some(name.as_str()) != namespace {
                    return Err(if private {
                        not_found
                    } else {
                        ApiError::forbidden(format!(
                            "You don't have the rights to write to {}",
                            namespace.unwrap_or("this namespace")
                        ))
                    });
                }
                if !write {
                    return Err(ApiError::forbidden("This token has read access only; a write token is needed"));
                }
                Ok(())
            }
        }
    }
}

pub fn invalid_token() -> ApiError {
    ApiError::unauthorized("Invalid credentials in Authorization header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_spec_parses_and_rejects() {
        let t: TokenSpec = "alice:hf_abc:write".parse().unwrap();
        assert_eq!(t, TokenSpec { user: "alice".into(), value: "hf_abc".into(), write: true });
        assert!("alice:hf_abc".parse::<TokenSpec>().is_err());
        assert!("alice:hf_abc:admin".parse::<TokenSpec>().is_err());
        assert!(":x:read".parse::<TokenSpec>().is_err());
    }

    #[test]
    fn access_rules_follow_the_hub() {
        let nf = ApiError::repo_not_found;
        let anon = Caller::Anonymous;
        let alice_r = Caller::User { name: "alice".into(), write: false };
        let alice_w = Caller::User { name: "alice".into(), write: true };
        let bob = Caller::User { name: "bob".into(), write: true };
        assert!(anon.check_read(Some("alice"), false, nf()).is_ok());
        assert_eq!(anon.check_read(Some("alice"), true, nf()).unwrap_err().status, 401);
        assert_eq!(bob.check_read(Some("alice"), true, nf()).unwrap_err().status, 404);
        assert!(alice_r.check_read(Some("alice"), true, nf()).is_ok());
        assert_eq!(alice_r.check_write(Some("alice"), false, nf()).unwrap_err().status, 403);
        assert_eq!(bob.check_write(Some("alice"), false, nf()).unwrap_err().status, 403);
        assert_eq!(bob.check_write(Some("alice"), true, nf()).unwrap_err().status, 404);
        assert!(alice_w.check_write(Some("alice"), true, nf()).is_ok());
        assert_eq!(Caller::Invalid.check_read(Some("alice"), false, nf()).unwrap_err().status, 401);
    }
}
