//! What a user types to point forkring at NATS: a server URL, subjects,
//! stream and consumer names. Each is checked here, before anything is
//! created, with a message that names the option and says what to give.

use serde::{Deserialize, Serialize};

/// Port of a `nats://` URL that names none.
pub(crate) const DEFAULT_PORT: u16 = 4222;
/// Longest subject or name accepted (the server's own limits are larger;
/// this keeps message ids and log lines readable).
pub(crate) const MAX_NAME: usize = 200;

/// A NATS server address, normalised to `nats://HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint(String);

impl Endpoint {
    /// Parses `nats://HOST[:PORT]` (HOST a name, an IPv4 address or a
    /// bracketed IPv6 address). `opt` names the option in the error.
    pub(crate) fn parse(opt: &str, s: &str) -> Result<Endpoint, String> {
        let bad = |why: &str| {
            format!(
                "{opt} {s:?} is not a NATS server URL: {why}; give nats://HOST:PORT, e.g. nats://127.0.0.1:4222"
            )
        };
        let rest = s.strip_prefix("nats://").ok_or_else(|| {
            bad("it must start with nats:// (tls:// and websockets are not supported)")
        })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@', ' ', ',']) {
            return Err(bad(
                "only a host and a port may follow nats:// (no path, user or list)",
            ));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address needs its closing ]"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("the address in [] is not IPv6"));
            }
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| bad("expected :PORT after ]"))?,
                ),
            };
            (format!("[{h}]"), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() || host == "[]" {
            return Err(bad("the host is missing"));
        }
        if !host.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            return Err(bad("the host has characters a host name cannot have"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return Err(bad("the port must be a number from 1 to 65535")),
            },
        };
        Ok(Endpoint(format!("nats://{host}:{port}")))
    }

    /// The normalised URL.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn name_chars_ok(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_graphic() && !matches!(c, '*' | '>' | '.' | '/' | '\\'))
}

/// Checks a subject to publish on or pull from: dot-separated tokens of
/// printable ASCII, no wildcards. `opt` names the option in the error.
pub(crate) fn subject(opt: &str, s: &str) -> Result<String, String> {
    let bad = |why: &str| {
        format!(
            "{opt} {s:?} is not a NATS subject: {why}; give tokens separated by dots, e.g. forkring.vectors"
        )
    };
    if s.is_empty() {
        return Err(bad("it is empty"));
    }
    if s.len() > MAX_NAME {
        return Err(bad(&format!("it is longer than {MAX_NAME} characters")));
    }
    for t in s.split('.') {
        if t.is_empty() {
            return Err(bad("a token between dots is empty"));
        }
        if t == "*" || t == ">" || t.contains(['*', '>']) {
            return Err(bad("wildcards (* and >) cannot be published to"));
        }
        if !t.chars().all(|c| c.is_ascii_graphic()) {
            return Err(bad("it has spaces or characters outside printable ASCII"));
        }
    }
    if s.starts_with('$') {
        return Err(bad("subjects starting with $ belong to the server"));
    }
    Ok(s.to_string())
}

/// Checks a JetStream stream or consumer name. `opt` names the option.
pub(crate) fn name(opt: &str, s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_NAME || !name_chars_ok(s) {
        return Err(format!(
            "{opt} {s:?} is not a JetStream name: give 1 to {MAX_NAME} printable characters without spaces, dots, *, >, / or \\"
        ));
    }
    Ok(s.to_string())
}

/// The stream name forkring uses for `subject` when none is given:
/// upper case, with dots and other characters a name cannot have as `_`
/// (`forkring.vectors` → `FORKRING_VECTORS`).
pub(crate) fn stream_for(subject: &str) -> String {
    subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ok = |s: &str| Endpoint::parse("--export", s).unwrap().0;
        assert_eq!(ok("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(ok("nats://localhost"), "nats://localhost:4222");
        assert_eq!(ok("nats://h-1.example:1/"), "nats://h-1.example:1");
        assert_eq!(ok("nats://[::1]:5000"), "nats://[::1]:5000");
        for bad in [
            "",
            "127.0.0.1:4222",
            "http://x:1",
            "nats://",
            "nats://:4222",
            "nats://x:0",
            "nats://x:65536",
            "nats://x:port",
            "nats://x:1/path",
            "nats://user@x:1",
            "nats://a b:1",
            "nats://[::1",
            "nats://[zz]:1",
            "nats://x:1,y:2",
        ] {
            let e = Endpoint::parse("--export", bad).unwrap_err();
            assert!(e.starts_with("--export "), "{e}");
            assert!(e.contains("nats://HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn subjects_and_names() {
        assert!(subject("--s", "a.b.c").is_ok());
        for bad in ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", "$JS.x", "ä"] {
            assert!(subject("--s", bad).is_err(), "{bad}");
        }
        assert!(name("--n", "FORKRING_1").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a/b"] {
            assert!(name("--n", bad).is_err(), "{bad}");
        }
        assert_eq!(stream_for("forkring.vec-1"), "FORKRING_VEC-1");
    }
}
