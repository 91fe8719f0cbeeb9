//! Named credentials: how a step proves who opsgate is to the system it
//! calls, without the secret ever being written in a runbook.
//!
//! A runbook names a credential (`with: { credential: awx-prod }`); the
//! server's configuration says what the name stands for, every secret by
//! reference. The name travels in the plan, the audit log and the API; the
//! secret is read only here, when a request is built, and goes out as a
//! header value marked sensitive, which hyper and reqwest never print. A
//! peer that echoes request headers back (an echo service, a debug page)
//! would still put the secret into the answer opsgate keeps, so what is
//! kept of an answer passes through [`Ready::scrub`].
//!
//! A credential with TLS material (a client certificate, a private CA) has
//! an HTTP client of its own, built once: a client certificate belongs to
//! the connection, not to one request, and the shared client must not
//! present it to every server.

use std::collections::BTreeMap;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use serde_json::Value;

use crate::Secret;
use crate::http::error_chain;

/// One named credential: a way of authenticating, a client certificate, or
/// both.
#[derive(Debug, Clone)]
pub struct Credential {
    pub auth: Option<Auth>,
    pub tls: Option<ClientTls>,
    /// The hosts the credential may be sent to (`api.example`, or
    /// `*.corp.example` for the hosts below a domain); empty: any host.
    /// A request naming the credential for another host fails before
    /// anything is sent.
    pub hosts: Vec<String>,
}

/// How a request says who sends it.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer {token}`: an OAuth2 access token, an AWX
    /// personal access token.
    Bearer { token: Secret },
    /// `Authorization: Basic …`: a Jenkins user and API token, a user and
    /// password.
    Basic { username: String, password: Secret },
    /// An API key in a header of its own (`X-Api-Key: …`).
    Header { name: String, value: Secret },
}

/// TLS settings of the connections made with a credential.
#[derive(Clone)]
pub struct ClientTls {
    /// The certificate presented to servers that ask for one (mutual TLS).
    pub identity: Option<ClientIdentity>,
    /// CA certificates (PEM) the server's certificate must chain to. When
    /// given they are the only ones trusted on these connections, instead
    /// of the system's trust store.
    pub ca: Option<String>,
}

/// A client certificate and its private key.
#[derive(Clone)]
pub struct ClientIdentity {
    /// The certificate, then any intermediate certificates, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1), unencrypted.
    pub key_pem: Secret,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("identity", &self.identity)
            .field(
                "ca",
                &self
                    .ca
                    .as_ref()
                    .map(|ca| format!("({} bytes of PEM)", ca.len())),
            )
            .finish()
    }
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field(
                "cert_pem",
                &format_args!("({} bytes of PEM)", self.cert_pem.len()),
            )
            .field("key_pem", &self.key_pem)
            .finish()
    }
}

/// Headers a credential may not set: the connection's own, and the cookie
/// a Jenkins session is kept in.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "cookie",
];

/// The configured credentials, checked and ready to use.
pub(crate) struct Credentials {
    by_name: BTreeMap<String, Ready>,
}

/// One credential, ready to sign requests.
pub(crate) struct Ready {
    name: String,
    scheme: &'static str,
    /// The header the credential adds, its value marked sensitive.
    header: Option<(HeaderName, HeaderValue)>,
    /// Texts that must not appear in what is kept of an answer: each
    /// secret as sent, and as it reads inside a JSON string.
    secrets: Vec<String>,
    /// A client of its own when the credential has TLS material.
    client: Option<reqwest::Client>,
    /// Patterns of the hosts it may be sent to; empty: any.
    hosts: Vec<String>,
}

impl Credentials {
    pub(crate) fn new(
        configured: &BTreeMap<String, Credential>,
        user_agent: &str,
    ) -> crate::Result<Credentials> {
        let by_name = configured
            .iter()
            .map(|(name, credential)| {
                Ready::new(name, credential, user_agent)
                    .map(|ready| (name.clone(), ready))
                    .map_err(|reason| crate::Error::Credential {
                        name: name.clone(),
                        reason,
                    })
            })
            .collect::<crate::Result<_>>()?;
        Ok(Credentials { by_name })
    }

    /// The credential `request` names in its `credential`, if it names one.
    pub(crate) fn named(&self, request: &Value) -> Result<Option<&Ready>, String> {
        match &request["credential"] {
            Value::Null => Ok(None),
            Value::String(name) => self.get(name).map(Some),
            other => Err(format!(
                "`credential` must be a credential's name, not {other}"
            )),
        }
    }

    /// As [`Credentials::named`], for actions that cannot go without one.
    pub(crate) fn required(&self, request: &Value, action: &str) -> Result<&Ready, String> {
        self.named(request)?.ok_or_else(|| {
            format!("`{action}` needs a `credential`: the name of an entry of `credentials:` in the config file")
        })
    }

    fn get(&self, name: &str) -> Result<&Ready, String> {
        self.by_name.get(name).ok_or_else(|| {
            let known = if self.by_name.is_empty() {
                "none is configured".to_owned()
            } else {
                let names: Vec<&str> = self.by_name.keys().map(String::as_str).collect();
                format!("configured: {}", names.join(", "))
            };
            format!("no credential is named `{name}` (`credentials:` in the config file; {known})")
        })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.by_name
                    .values()
                    .map(|ready| (&ready.name, ready.scheme)),
            )
            .finish()
    }
}

impl Ready {
    fn new(name: &str, credential: &Credential, user_agent: &str) -> Result<Ready, String> {
        let well_formed = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !well_formed {
            return Err("a credential's name is letters, digits, `-`, `_` and `.`".to_owned());
        }
        let mut secrets = Vec::new();
        let (scheme, header) = match &credential.auth {
            None => ("tls", None),
            Some(Auth::Bearer { token }) => {
                secrets.push(token.expose().to_owned());
                let value = sensitive(&format!("Bearer {}", token.expose()))
                    .ok_or("`bearer.token` cannot be sent in a header (a control character?)")?;
                ("bearer", Some((AUTHORIZATION, value)))
            }
            Some(Auth::Basic { username, password }) => {
                if username.is_empty() || username.contains(':') {
                    return Err(format!(
                        "`basic.username` `{username}` cannot be sent: it is empty or holds a `:`"
                    ));
                }
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()));
                let value = sensitive(&format!("Basic {encoded}"))
                    .expect("base64 is always a valid header value");
                secrets.push(password.expose().to_owned());
                secrets.push(encoded);
                ("basic", Some((AUTHORIZATION, value)))
            }
            Some(Auth::Header { name, value }) => {
                let header = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| format!("`header.name` `{name}` is not a header name"))?;
                if RESERVED_HEADERS.contains(&header.as_str()) {
                    return Err(format!(
                        "`header.name` `{name}` is a header the connection sets itself"
                    ));
                }
                let sent = sensitive(value.expose())
                    .ok_or("`header.value` cannot be sent in a header (a control character?)")?;
                secrets.push(value.expose().to_owned());
                ("header", Some((header, sent)))
            }
        };
        if let Some(bad) = credential
            .hosts
            .iter()
            .find(|pattern| !domain::is_host_pattern(pattern))
        {
            return Err(format!(
                "`hosts` entry `{bad}` is not a host name or `*.domain` (no scheme, port or path)"
            ));
        }
        if header.is_none() && credential.tls.is_none() {
            return Err(
                "it gives neither a scheme (`bearer`, `basic` or `header`) nor `tls`".to_owned(),
            );
        }
        let client = credential
            .tls
            .as_ref()
            .map(|tls| tls_client(tls, user_agent))
            .transpose()?;
        // A secret inside a JSON string reads escaped.
        let escaped: Vec<String> = secrets
            .iter()
            .map(|secret| Value::from(secret.as_str()).to_string())
            .map(|quoted| quoted[1..quoted.len() - 1].to_owned())
            .filter(|escaped| !secrets.contains(escaped))
            .collect();
        secrets.extend(escaped);
        secrets.retain(|secret| !secret.is_empty());
        // Longest first, so that no secret is half-replaced by a shorter
        // one it contains.
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        Ok(Ready {
            name: name.to_owned(),
            scheme,
            header,
            secrets,
            client,
            hosts: credential.hosts.clone(),
        })
    }

    /// Refuses `url` when it names a host the credential may not be sent
    /// to; checked before every request that carries it.
    pub(crate) fn allows(&self, url: &reqwest::Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default();
        if self.hosts.is_empty()
            || self
                .hosts
                .iter()
                .any(|pattern| domain::host_matches(pattern, host))
        {
            return Ok(());
        }
        Err(format!(
            "credential `{}` may only be sent to {} (its `hosts`), not to `{host}`: nothing was sent",
            self.name,
            self.hosts.join(", ")
        ))
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The client to send with: the credential's own when it has TLS
    /// material, else `shared`.
    pub(crate) fn client<'a>(&'a self, shared: &'a reqwest::Client) -> &'a reqwest::Client {
        self.client.as_ref().unwrap_or(shared)
    }

    /// The header the credential sets, to refuse a request that sets it
    /// too.
    pub(crate) fn header_name(&self) -> Option<&HeaderName> {
        self.header.as_ref().map(|(name, _)| name)
    }

    /// `request` with the credential's header.
    pub(crate) fn sign(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.header {
            Some((name, value)) => request.header(name.clone(), value.clone()),
            None => request,
        }
    }

    /// `text` with every secret of the credential replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
    }
}

/// A header value that hyper and reqwest never print.
fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

fn tls_client(tls: &ClientTls, user_agent: &str) -> Result<reqwest::Client, String> {
    // As the shared client: a redirect is the step's answer, never followed
    // by the client (see the crate's documentation).
    let mut builder = reqwest::Client::builder()
        .user_agent(user_agent)
        .redirect(reqwest::redirect::Policy::none());
    if let Some(identity) = &tls.identity {
        let mut pem = identity.cert_pem.trim_end().as_bytes().to_vec();
        pem.push(b'\n');
        pem.extend_from_slice(identity.key_pem.expose().trim_end().as_bytes());
        pem.push(b'\n');
        let identity = reqwest::Identity::from_pem(&pem).map_err(|error| {
            format!(
                "`tls.client_cert` and `tls.client_key` are not a PEM certificate and an unencrypted PEM private key: {}",
                error_chain(&error)
            )
        })?;
        builder = builder.identity(identity);
    }
    if let Some(ca) = &tls.ca {
        let certificates = reqwest::Certificate::from_pem_bundle(ca.as_bytes())
            .map_err(|error| format!("`tls.ca` is not PEM: {}", error_chain(&error)))?;
        if certificates.is_empty() {
            return Err("`tls.ca` holds no certificate".to_owned());
        }
        builder = builder.tls_certs_only(certificates);
    }
    builder
        .build()
        .map_err(|error| format!("its TLS settings are refused: {}", error_chain(&error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(auth: Auth) -> Result<Ready, String> {
        Ready::new(
            "test",
            &Credential {
                auth: Some(auth),
                tls: None,
                hosts: Vec::new(),
            },
            "opsgate-test",
        )
    }

    #[test]
    fn each_scheme_is_one_sensitive_header() {
        let check = |auth: Auth, name: &str, value: &str| {
            let ready = ready(auth).expect("a valid credential");
            let (header, sent) = ready.header.as_ref().expect("a header");
            assert_eq!(header.as_str(), name);
            assert_eq!(sent.to_str().unwrap(), value);
            assert!(sent.is_sensitive());
        };
        check(
            Auth::Bearer {
                token: Secret::new("t0ken"),
            },
            "authorization",
            "Bearer t0ken",
        );
        // RFC 7617's example.
        check(
            Auth::Basic {
                username: "Aladdin".into(),
                password: Secret::new("open sesame"),
            },
            "authorization",
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
        );
        check(
            Auth::Header {
                name: "X-Api-Key".into(),
                value: Secret::new("k3y"),
            },
            "x-api-key",
            "k3y",
        );
    }

    #[test]
    fn unusable_credentials_are_refused_without_their_secret() {
        let check = |auth: Auth, expect: &str| {
            let error = ready(auth).err().expect("refused");
            assert_eq!(error, expect);
        };
        check(
            Auth::Bearer {
                token: Secret::new("line\nbreak"),
            },
            "`bearer.token` cannot be sent in a header (a control character?)",
        );
        check(
            Auth::Basic {
                username: "a:b".into(),
                password: Secret::new("p"),
            },
            "`basic.username` `a:b` cannot be sent: it is empty or holds a `:`",
        );
        check(
            Auth::Header {
                name: "X Api Key".into(),
                value: Secret::new("k"),
            },
            "`header.name` `X Api Key` is not a header name",
        );
        check(
            Auth::Header {
                name: "Cookie".into(),
                value: Secret::new("k"),
            },
            "`header.name` `Cookie` is a header the connection sets itself",
        );
        let nothing = Ready::new(
            "empty",
            &Credential {
                auth: None,
                tls: None,
                hosts: Vec::new(),
            },
            "ua",
        );
        assert_eq!(
            nothing.err().as_deref(),
            Some("it gives neither a scheme (`bearer`, `basic` or `header`) nor `tls`")
        );
    }

    #[test]
    fn scrubbing_covers_the_secret_as_sent_and_as_json_escapes_it() {
        let ready = ready(Auth::Basic {
            username: "ops".into(),
            password: Secret::new("pa\"ss"),
        })
        .unwrap();
        let echoed = format!(
            r#"{{"password": "pa\"ss", "raw": pa"ss, "authorization": "Basic {}"}}"#,
            base64::engine::general_purpose::STANDARD.encode("ops:pa\"ss")
        );
        assert_eq!(
            ready.scrub(&echoed),
            r#"{"password": "***", "raw": ***, "authorization": "Basic ***"}"#
        );
    }
}
