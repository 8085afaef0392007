//! TLS rules: certificate files and server names, listeners, the certificates they offer,
//! and that SNI picks exactly one certificate per name.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use toml::Spanned;

use crate::decode::{Field, Keyword};
use crate::diagnostics::codes;
use crate::files::{self, PemKind};
use crate::model::{Certificate, Listener, ListenerProtocol};
use crate::raw::{ListenerKind, RawCertificate, RawListener};

use super::{Built, Validator};

impl Validator<'_> {
    pub(super) fn certificates(&mut self, raw: &[RawCertificate]) -> Built<Certificate> {
        let names = self.names("certificate", raw.iter().map(|c| (&c.name, &c.at)));
        let mut items = Some(Vec::with_capacity(raw.len()));
        for cert in raw {
            let built = self.certificate(cert);
            match (built, items.as_mut()) {
                (Some(c), Some(list)) => list.push(c),
                _ => items = None,
            }
        }
        Built { items, names }
    }

    pub(super) fn pem_file(
        &mut self,
        field: &Field<String>,
        path: String,
        kind: PemKind,
    ) -> Option<PathBuf> {
        let written = field.spanned()?;
        if written.get_ref().is_empty() {
            self.sink.error(
                codes::BAD_VALUE,
                &written.span(),
                path,
                "the file name is empty".to_owned(),
                None,
            );
            return None;
        }
        let resolved = files::resolve(&self.base, written.get_ref());
        match files::check_pem(&resolved, kind) {
            Ok(()) => Some(resolved),
            Err(problem) => {
                self.sink.error(
                    problem.code,
                    &written.span(),
                    path,
                    problem.message,
                    problem.hint,
                );
                None
            }
        }
    }

    pub(super) fn certificate(&mut self, raw: &RawCertificate) -> Option<Certificate> {
        let at = &raw.at;
        let cert_file = self.pem_file(&raw.cert_file, at.field("cert_file"), PemKind::Certificate);
        let key_file = self.pem_file(&raw.key_file, at.field("key_file"), PemKind::PrivateKey);
        let server_names = raw.server_names.spanned().and_then(|list| {
            let path = at.field("server_names");
            if list.get_ref().is_empty() {
                self.empty_list(
                    &list.span(),
                    path,
                    "the certificate has no server names".to_owned(),
                    "list the SNI names it serves, e.g. [\"www.example.com\", \"*.example.com\"]",
                );
                return None;
            }
            let mut ok = true;
            for (i, name) in list.get_ref().iter().enumerate() {
                if !is_dns_name(name.get_ref()) {
                    ok = false;
                    self.sink.error(
                        codes::BAD_VALUE,
                        &name.span(),
                        format!("{path}[{i}]"),
                        format!("\"{}\" is not a DNS name", name.get_ref()),
                        Some("use a host name such as \"www.example.com\" or a wildcard such as \"*.example.com\"; SNI carries no IP addresses".to_owned()),
                    );
                }
            }
            let lowered: Vec<Spanned<String>> = list
                .get_ref()
                .iter()
                .map(|n| Spanned::new(n.span(), n.get_ref().to_ascii_lowercase()))
                .collect();
            ok &= self.no_duplicate_entries(&lowered, &path, |n: &String| format!("server name \"{n}\""));
            ok.then(|| lowered.into_iter().map(Spanned::into_inner).collect())
        });
        Some(Certificate {
            name: raw.name.get()?.clone(),
            cert_file: cert_file?,
            key_file: key_file?,
            server_names: server_names?,
        })
    }

    pub(super) fn listeners(
        &mut self,
        raw: &[RawListener],
        certificates: &Built<Certificate>,
    ) -> Built<Listener> {
        let names = self.names("listener", raw.iter().map(|l| (&l.name, &l.at)));
        let mut addresses: HashMap<SocketAddr, &str> = HashMap::new();
        let mut items = Some(Vec::with_capacity(raw.len()));
        for listener in raw {
            if let Some(address) = listener.address.spanned() {
                if let Some(first) = addresses.get(address.get_ref()) {
                    self.sink.error(
                        codes::DUPLICATE_ADDRESS,
                        &address.span(),
                        listener.at.field("address"),
                        format!("address {} is already used by {first}", address.get_ref()),
                        Some("every listener needs its own address and port".to_owned()),
                    );
                    items = None;
                } else {
                    addresses.insert(*address.get_ref(), &listener.at.path);
                }
            }
            let built = self.listener(listener, certificates);
            match (built, items.as_mut()) {
                (Some(l), Some(list)) => list.push(l),
                _ => items = None,
            }
        }
        Built { items, names }
    }

    pub(super) fn listener(
        &mut self,
        raw: &RawListener,
        certificates: &Built<Certificate>,
    ) -> Option<Listener> {
        let at = &raw.at;
        let kind = raw.protocol.get()?.0;
        let protocol = match kind {
            ListenerKind::Http | ListenerKind::H2c => {
                if raw.certificates.is_written() {
                    self.not_applicable(
                        &raw.certificates,
                        at.field("certificates"),
                        format!(
                            "`certificates` only applies to https listeners, not to {} listeners",
                            kind.keyword()
                        ),
                        "remove `certificates`, or set `protocol = \"https\"`",
                    );
                    return None;
                }
                if kind == ListenerKind::Http {
                    ListenerProtocol::Http
                } else {
                    ListenerProtocol::H2c
                }
            }
            ListenerKind::Https => {
                let list = match &raw.certificates {
                    Field::Absent => {
                        let name = raw.name.get().map_or("", String::as_str);
                        self.missing(
                            at,
                            "certificates",
                            format!("https listener \"{name}\" has no certificates"),
                            "add `certificates = [\"NAME\", …]` naming [[tls.certificates]] entries".to_owned(),
                        );
                        return None;
                    }
                    Field::Invalid => return None,
                    Field::Present(list) => list,
                };
                let path = at.field("certificates");
                if list.get_ref().is_empty() {
                    self.empty_list(
                        &list.span(),
                        path,
                        "https listener has an empty `certificates` list".to_owned(),
                        "name at least one [[tls.certificates]] entry",
                    );
                    return None;
                }
                let mut ok = self.no_duplicate_entries(list.get_ref(), &path, |n: &String| {
                    format!("certificate \"{n}\"")
                });
                for (i, name) in list.get_ref().iter().enumerate() {
                    let field = Field::Present(name.clone());
                    ok &= self.reference(
                        &field,
                        format!("{path}[{i}]"),
                        &certificates.names,
                        codes::UNDEFINED_CERTIFICATE,
                        "certificate",
                        "tls.certificates",
                    );
                }
                if ok {
                    ok = self.distinct_server_names(list.get_ref(), &path, certificates);
                }
                if !ok {
                    return None;
                }
                ListenerProtocol::Https {
                    certificates: list.get_ref().iter().map(|n| n.get_ref().clone()).collect(),
                }
            }
        };
        Some(Listener {
            name: raw.name.get()?.clone(),
            address: *raw.address.get()?,
            protocol,
        })
    }

    /// Two certificates of one listener must not claim the same SNI name.
    pub(super) fn distinct_server_names(
        &mut self,
        names: &[Spanned<String>],
        path: &str,
        certificates: &Built<Certificate>,
    ) -> bool {
        let Some(defined) = certificates.items.as_ref() else {
            return true; // A certificate failed; its own error is reported.
        };
        let mut owner: HashMap<&str, &str> = HashMap::new();
        let mut ok = true;
        for (i, name) in names.iter().enumerate() {
            let Some(cert) = defined.iter().find(|c| &c.name == name.get_ref()) else {
                continue;
            };
            for server_name in &cert.server_names {
                match owner.get(server_name.as_str()) {
                    Some(first) if *first != cert.name => {
                        ok = false;
                        self.sink.error(
                            codes::DUPLICATE_SERVER_NAME,
                            &name.span(),
                            format!("{path}[{i}]"),
                            format!(
                                "server name \"{server_name}\" is served by both certificate \"{first}\" and certificate \"{}\"",
                                cert.name
                            ),
                            Some("SNI must pick exactly one certificate: remove the name from one of them".to_owned()),
                        );
                    }
                    Some(_) => {}
                    None => {
                        owner.insert(server_name, &cert.name);
                    }
                }
            }
        }
        ok
    }
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.parse::<std::net::IpAddr>().is_err()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}
