//! Cluster rules: the cluster id and secret, unique unit names, ids and addresses, unit roles,
//! and which unit classifies for each forwarder-only unit.

use std::collections::HashMap;

use crate::decode::{Field, Keyword, Kw};
use crate::diagnostics::codes;
use crate::files::{self};
use crate::model::{Cluster, Role, Unit, UnitId};
use crate::raw::{RawCluster, RawUnit};

use super::{DEFAULT_ADMIN, DEFAULT_CONTROL_PORT, Names, Validator};

impl Validator<'_> {
    pub(super) fn cluster(&mut self, raw: &RawCluster) -> Option<Cluster> {
        let id = self.name(&raw.id, raw.at.field("id"));
        let secret = raw.secret_file.spanned().and_then(|written| {
            let path = files::resolve(&self.base, written.get_ref());
            match files::read_secret(&path) {
                Ok(secret) => Some((path, secret)),
                Err(problem) => {
                    self.sink.error(
                        problem.code,
                        &written.span(),
                        raw.at.field("secret_file"),
                        problem.message,
                        problem.hint,
                    );
                    None
                }
            }
        });
        if raw.units_written && raw.units.is_empty() {
            self.empty_list(
                &raw.at.span,
                raw.at.field("units"),
                "the cluster has no units".to_owned(),
                "add at least one [[cluster.units]] table",
            );
        }
        let units = self.units(&raw.units);
        let (id, (secret_file, secret), units) = (id?, secret?, units?);
        Some(Cluster {
            id,
            secret_file,
            secret,
            units,
        })
    }

    pub(super) fn units(&mut self, raw: &[RawUnit]) -> Option<Vec<Unit>> {
        let names = self.names("unit", raw.iter().map(|u| (&u.name, &u.at)));
        let mut ids: HashMap<u32, &str> = HashMap::new();
        let mut addresses: HashMap<std::net::IpAddr, &str> = HashMap::new();
        for unit in raw {
            if let Some(id) = unit.id.spanned() {
                if let Some(first) = ids.get(id.get_ref()) {
                    self.sink.error(
                        codes::DUPLICATE_ID,
                        &id.span(),
                        unit.at.field("id"),
                        format!("unit id {} is already used by {first}", id.get_ref()),
                        Some("every unit needs its own id".to_owned()),
                    );
                } else {
                    ids.insert(*id.get_ref(), &unit.at.path);
                }
            }
            if let Some(address) = unit.address.spanned() {
                if let Some(first) = addresses.get(address.get_ref()) {
                    self.sink.error(
                        codes::DUPLICATE_ADDRESS,
                        &address.span(),
                        unit.at.field("address"),
                        format!("address {} is already used by {first}", address.get_ref()),
                        Some("every unit needs its own control-plane address".to_owned()),
                    );
                } else {
                    addresses.insert(*address.get_ref(), &unit.at.path);
                }
            }
        }

        // Roles of every unit whose roles could be read, for classifier references.
        let mut roles_by_name: HashMap<&str, Vec<Role>> = HashMap::new();
        let mut unit_roles = Vec::with_capacity(raw.len());
        for unit in raw {
            let roles = self.roles(unit);
            if let (Some(roles), Some(name)) = (&roles, unit.name.get()) {
                roles_by_name
                    .entry(name.as_str())
                    .or_insert_with(|| roles.clone());
            }
            unit_roles.push(roles);
        }

        let mut out = Vec::with_capacity(raw.len());
        let mut ok = true;
        for (unit, roles) in raw.iter().zip(unit_roles) {
            let classifier = roles
                .as_deref()
                .and_then(|roles| self.unit_classifier(unit, roles, &names, &roles_by_name));
            match (
                unit.name.get(),
                unit.id.get(),
                unit.address.get(),
                roles,
                classifier,
            ) {
                (Some(name), Some(id), Some(address), Some(roles), Some(classifier)) => {
                    let control_port = match &unit.control_port {
                        Field::Absent => DEFAULT_CONTROL_PORT,
                        Field::Invalid => {
                            ok = false;
                            continue;
                        }
                        Field::Present(port) => *port.get_ref(),
                    };
                    let admin = match &unit.admin {
                        Field::Absent => DEFAULT_ADMIN,
                        Field::Invalid => {
                            ok = false;
                            continue;
                        }
                        Field::Present(admin) => *admin.get_ref(),
                    };
                    let Some(forwarder) = self.forwarder_settings(unit, &roles) else {
                        ok = false;
                        continue;
                    };
                    out.push(Unit {
                        name: name.clone(),
                        id: UnitId(*id),
                        address: *address,
                        roles,
                        classifier,
                        control_port,
                        admin,
                        forwarder,
                    });
                }
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub(super) fn roles(&mut self, unit: &RawUnit) -> Option<Vec<Role>> {
        let roles = unit.roles.spanned()?;
        let path = unit.at.field("roles");
        if roles.get_ref().is_empty() {
            self.empty_list(
                &roles.span(),
                path,
                "the unit has no roles".to_owned(),
                "list what the unit runs: forwarder, classifier, router, session-store, health-cache",
            );
            return None;
        }
        let clean = self.no_duplicate_entries(roles.get_ref(), &path, |r: &Kw<Role>| {
            format!("role \"{}\"", r.0.keyword())
        });
        clean.then(|| roles.get_ref().iter().map(|r| r.get_ref().0).collect())
    }

    /// Checks `classifier` of one unit whose roles are known. `Some(None)`: no classifier
    /// (and none needed); `None`: an error was reported.
    pub(super) fn unit_classifier(
        &mut self,
        unit: &RawUnit,
        roles: &[Role],
        names: &Names,
        roles_by_name: &HashMap<&str, Vec<Role>>,
    ) -> Option<Option<String>> {
        let forwards = roles.contains(&Role::Forwarder);
        let classifies = roles.contains(&Role::Classifier);
        let path = unit.at.field("classifier");
        let Some(target) = unit.classifier.spanned() else {
            if unit.classifier.is_written() {
                return None;
            }
            if forwards && !classifies {
                let name = unit.name.get().map_or("this unit", String::as_str);
                self.sink.error(
                    codes::NO_CLASSIFIER,
                    &unit.at.span,
                    path,
                    format!("forwarder unit \"{name}\" has no classifier role and names no classifier"),
                    Some("add `classifier = \"UNIT\"` naming a unit with the classifier role, or give this unit the classifier role too".to_owned()),
                );
                return None;
            }
            return Some(None);
        };
        if !forwards {
            self.not_applicable(
                &unit.classifier,
                path,
                "`classifier` is set on a unit without the forwarder role".to_owned(),
                "only forwarder units hand new connections to a classifier; remove `classifier`",
            );
            return None;
        }
        if classifies {
            self.not_applicable(
                &unit.classifier,
                path,
                "`classifier` is set on a unit that has the classifier role itself".to_owned(),
                "a unit with both roles classifies its own connections; remove `classifier` or the classifier role",
            );
            return None;
        }
        if !self.reference(
            &unit.classifier,
            path.clone(),
            names,
            codes::UNDEFINED_UNIT,
            "unit",
            "cluster.units",
        ) {
            return None;
        }
        let name = target.get_ref();
        match roles_by_name.get(name.as_str()) {
            Some(target_roles) if target_roles.contains(&Role::Classifier) => {
                Some(Some(name.clone()))
            }
            Some(_) => {
                let classifiers: Vec<&str> = {
                    let mut c: Vec<&str> = roles_by_name
                        .iter()
                        .filter(|(_, r)| r.contains(&Role::Classifier))
                        .map(|(n, _)| *n)
                        .collect();
                    c.sort_unstable();
                    c
                };
                let hint = if classifiers.is_empty() {
                    format!("add \"classifier\" to the roles of unit \"{name}\"")
                } else {
                    format!(
                        "add \"classifier\" to the roles of unit \"{name}\", or name a classifier unit: {}",
                        classifiers.join(", ")
                    )
                };
                self.sink.error(
                    codes::NOT_A_CLASSIFIER,
                    &target.span(),
                    path,
                    format!("unit \"{name}\" does not have the classifier role"),
                    Some(hint),
                );
                None
            }
            // The target's name resolved but its roles could not be read; that error is
            // reported already.
            None => None,
        }
    }
}
