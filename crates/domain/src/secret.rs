//! `Secret`: the one type every credential, signing key and webhook secret
//! is held in, from the moment the configuration is read.
//!
//! It lives here, below every crate that holds one (connectors' credentials
//! and write-back clients, the server's webhook and link keys, the runtime's
//! anchor key), so that there is one rule for all of them: `Debug` never
//! prints the value, and reading it is a call named `expose` that a reviewer
//! can grep for.

use std::sync::Arc;

/// A secret value. `Debug` prints `***`, so it cannot end up in a log line
/// or an error message by accident; [`Secret::expose`] is the one way to
/// read it. Cloning shares the value.
#[derive(Clone)]
pub struct Secret(Arc<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into().into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The value as bytes, for a key (HMAC) rather than a header.
    pub fn expose_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn debug_never_prints_the_value() {
        #[derive(Debug)]
        #[allow(dead_code)] // read only through `Debug`
        struct Holder {
            key: Secret,
        }
        let holder = Holder {
            key: Secret::new("hunter2-Pw"),
        };
        assert_eq!(format!("{holder:?}"), "Holder { key: *** }");
        assert_eq!(format!("{holder:#?}").matches("hunter2").count(), 0);
        assert_eq!(holder.key.expose(), "hunter2-Pw");
        assert_eq!(holder.key.expose_bytes(), b"hunter2-Pw");
    }
}
