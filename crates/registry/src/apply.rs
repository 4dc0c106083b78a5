//! Managed fields and server-side apply. Every write records which manager set which fields
//! (`metadata.managedFields`, FieldsV1); an apply sets exactly the fields of its configuration,
//! removes the ones its manager applied before and no longer does, and refuses (409) to change a
//! field another manager set to a different value unless forced.

use apimachinery::fieldset::{self, FieldSet, Path};
use apimachinery::{meta, patch, ApiError, FieldError};
use serde_json::{json, Value};

use crate::store::{GenericStore, WriteOptions, Written, MAX_RETRIES};

#[derive(Clone, Debug)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: String,
    pub set: FieldSet,
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or("").into(),
                    operation: e["operation"].as_str().unwrap_or("").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or("").into(),
                    time: e["time"].as_str().unwrap_or("").into(),
                    subresource: e["subresource"].as_str().unwrap_or("").into(),
                    set: fieldset::from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn set_entries(obj: &mut Value, es: &[Entry]) {
    let list: Vec<Value> = es
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": fieldset::to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if list.is_empty() {
        meta::remove_meta(obj, "managedFields");
    } else {
        meta::metadata_mut(obj).insert("managedFields".into(), Value::Array(list));
    }
}

fn upsert<'a>(
    es: &'a mut Vec<Entry>,
    manager: &str,
    op: &str,
    av: &str,
    sub: &str,
) -> &'a mut Entry {
    let i = match es
        .iter()
        .position(|e| e.manager == manager && e.operation == op && e.subresource == sub)
    {
        Some(i) => i,
        None => {
            es.push(Entry {
                manager: manager.into(),
                operation: op.into(),
                api_version: av.into(),
                time: String::new(),
                subresource: sub.into(),
                set: FieldSet::new(),
            });
            es.len() - 1
        }
    };
    let e = &mut es[i];
    e.api_version = av.into();
    e.time = meta::now_rfc3339();
    e
}

/// Records an update by `manager`: the fields that changed from `old` to `new` become its own.
pub fn record_update(new: &mut Value, old: Option<&Value>, manager: &str, av: &str, sub: &str) {
    if manager.is_empty() {
        return;
    }
    let mut es = match old {
        Some(o) if new["metadata"].get("managedFields").is_none() => entries(o),
        _ => entries(new),
    };
    let changed: FieldSet = fieldset::field_set(new)
        .into_iter()
        .filter(|p| old.is_none_or(|o| fieldset::get(o, p) != fieldset::get(new, p)))
        .collect();
    if changed.is_empty() && old.is_some() {
        set_entries(new, &es);
        return;
    }
    for e in es.iter_mut() {
        if e.manager != manager || e.operation != "Update" {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    let live = fieldset::field_set(new);
    let e = upsert(&mut es, manager, "Update", av, sub);
    e.set.extend(changed);
    e.set.retain(|p| live.contains(p));
    set_entries(new, &es);
}

fn conflict_error(
    group: &str,
    resource: &str,
    name: &str,
    conflicts: &[(String, String, Path)],
) -> ApiError {
    let shown = |(m, av, p): &(String, String, Path)| {
        let using = if av.is_empty() {
            String::new()
        } else {
            format!(" using {av}")
        };
        (format!("conflict with {m:?}{using}"), fieldset::display(p))
    };
    let msg = if conflicts.len() == 1 {
        let (w, p) = shown(&conflicts[0]);
        format!("Apply failed with 1 conflict: {w}: {p}")
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|c| {
                let (w, p) = shown(c);
                format!("{w}: {p}")
            })
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let mut e = ApiError::conflict(group, resource, name, "");
    e.message = msg;
    e.causes = conflicts
        .iter()
        .map(|c| {
            let (w, p) = shown(c);
            FieldError {
                reason: "FieldManagerConflict",
                field: p,
                message: w,
            }
        })
        .collect();
    e
}

impl GenericStore {
    /// A server-side apply (`application/apply-patch+yaml`) of `body` by `manager`.
    pub async fn apply(
        &self,
        ns: &str,
        name: &str,
        mut body: Value,
        manager: &str,
        force: bool,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
            ));
        }
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the apply configuration is not an object",
            ));
        }
        let info = self.strategy.info();
        let av = info.api_version();
        for (k, want) in [("apiVersion", av.as_str()), ("kind", info.kind)] {
            match body.get(k).and_then(Value::as_str) {
                Some(v) if v == want => {}
                Some(v) => {
                    return Err(ApiError::bad_request(format!(
                        "the {k} in the apply configuration ({v}) does not match the request's ({want})"
                    )))
                }
                None => {
                    return Err(ApiError::bad_request(format!(
                        "{k} must be set in an apply configuration"
                    )))
                }
            }
        }
        match meta::name(&body) {
            "" => meta::set_meta_str(&mut body, "name", name),
            n if n != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        meta::remove_meta(&mut body, "managedFields");
        let applied = fieldset::field_set(&body);
        let plain = WriteOptions {
            field_manager: String::new(),
            ..opts.clone()
        };
        for _ in 0..MAX_RETRIES {
            let Some((old, mod_rev)) = self.read(ns, name).await? else {
                let mut obj = body.clone();
                let mut es = vec![];
                upsert(&mut es, manager, "Apply", &av, "").set = applied.clone();
                set_entries(&mut obj, &es);
                return self.create(ns, obj, &plain).await;
            };
            let mut es = entries(&old);
            let mut conflicts = vec![];
            for e in &es {
                if e.manager == manager && e.operation == "Apply" {
                    continue;
                }
                for p in e.set.intersection(&applied) {
                    let (a, b) = (fieldset::get(&old, p), fieldset::get(&body, p));
                    let leaf = !matches!(p.last(), Some(fieldset::Seg::K(_) | fieldset::Seg::V(_)));
                    if leaf && a.is_some() && a != b {
                        let using = if e.operation == "Update" {
                            e.api_version.clone()
                        } else {
                            String::new()
                        };
                        conflicts.push((e.manager.clone(), using, p.clone()));
                    }
                }
            }
            if !conflicts.is_empty() && !force {
                return Err(conflict_error(
                    self.group(),
                    self.resource(),
                    name,
                    &conflicts,
                ));
            }
            for (m, _, p) in &conflicts {
                for e in es.iter_mut().filter(|e| &e.manager == m) {
                    e.set.remove(p);
                }
            }
            let previous = es
                .iter()
                .find(|e| e.manager == manager && e.operation == "Apply")
                .map(|e| e.set.clone())
                .unwrap_or_default();
            let others: FieldSet = es
                .iter()
                .filter(|e| !(e.manager == manager && e.operation == "Apply"))
                .flat_map(|e| e.set.iter().cloned())
                .collect();
            let mut merged = old.clone();
            for p in previous.iter().rev() {
                if !applied.contains(p) && !others.contains(p) {
                    fieldset::remove(&mut merged, p);
                }
            }
            patch::strategic_merge_patch(&mut merged, &body)?;
            upsert(&mut es, manager, "Apply", &av, "").set = applied.clone();
            set_entries(&mut merged, &es);
            if let Some(w) = self
                .write_update(ns, name, merged, &old, mod_rev, None, &plain)
                .await?
            {
                return Ok(w);
            }
        }
        Err(ApiError::conflict_modified(
            self.group(),
            self.resource(),
            name,
        ))
    }
}
