//! `GenericStore`: create, get, list, update, patch and delete written once for every resource, over
//! the `Kv` trait. Objects are stored as JSON at `/registry/<prefix>/<namespace>/<name>` without a
//! resourceVersion; on the way out the resourceVersion is the key's mod revision.

use std::sync::Arc;

use apimachinery::meta;
use apimachinery::patch::{self, PatchType};
use apimachinery::{continuation, ApiError, FieldError, FieldSelector, LabelSelector};
use etcd_api::*;
use serde_json::{json, Value};
use store::Kv;

use crate::kvutil::{self, store_err};
use crate::strategy::Strategy;

pub use crate::options::{
    DeleteOptions, Deleted, FieldValidation, ListOptions, ListResult, Propagation, WriteOptions,
    Written,
};

#[derive(Clone)]
pub struct GenericStore {
    pub kv: Arc<dyn Kv>,
    pub strategy: Arc<dyn Strategy>,
    /// Allocation around writes (Service IPs and ports), when the resource needs it.
    pub hooks: Option<Arc<dyn crate::allocator::Hooks>>,
    /// Objects of this resource expire this many seconds after their last write (events).
    pub ttl_seconds: Option<i64>,
    /// Encryption at rest of this resource's stored values, when configured.
    pub transformer: Option<Arc<crate::encryption::Transformer>>,
    /// The namespaces' one (the namespace lifecycle check reads them).
    pub namespace_transformer: Option<Arc<crate::encryption::Transformer>>,
    pub(crate) leases: Arc<kvutil::LeaseCache>,
    /// The resource's watch cache, started by its first watch.
    pub(crate) watch_cache: Arc<crate::watch_cache::Slot>,
}

pub(crate) const MAX_RETRIES: usize = 8;
/// Keys read from the store per request while listing.
const LIST_BATCH: i64 = 500;

impl GenericStore {
    pub fn new(kv: Arc<dyn Kv>, strategy: Arc<dyn Strategy>) -> Self {
        GenericStore {
            kv,
            strategy,
            hooks: None,
            ttl_seconds: None,
            transformer: None,
            namespace_transformer: None,
            leases: Default::default(),
            watch_cache: Default::default(),
        }
    }

    pub(crate) fn group(&self) -> &'static str {
        self.strategy.info().group
    }

    pub(crate) fn resource(&self) -> &'static str {
        self.strategy.info().resource
    }

    async fn lease(&self) -> Result<i64, ApiError> {
        match self.ttl_seconds {
            Some(ttl) => self.leases.lease(&*self.kv, ttl).await,
            None => Ok(0),
        }
    }

    /// `/registry/<prefix>/` or `/registry/<prefix>/<ns>/` (the list and watch range).
    pub fn prefix(&self, ns: &str) -> String {
        let p = self.strategy.info().etcd_prefix;
        if self.strategy.info().namespaced && !ns.is_empty() {
            format!("/registry/{p}/{ns}/")
        } else {
            format!("/registry/{p}/")
        }
    }

    pub fn key(&self, ns: &str, name: &str) -> String {
        format!("{}{name}", self.prefix(ns))
    }

    pub(crate) fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(self.group(), self.resource(), name)
    }

    /// Decodes a stored value; the resourceVersion is the key's mod revision.
    pub fn decode(&self, kv: &PbKeyValue) -> Result<Value, ApiError> {
        let plain;
        let data = match &self.transformer {
            Some(t) => {
                plain = t.from_storage(&kv.key, &kv.value).map_err(|e| {
                    ApiError::internal(format!(
                        "unable to transform key {:?}: {e}",
                        String::from_utf8_lossy(&kv.key)
                    ))
                })?;
                &plain[..]
            }
            None => &kv.value[..],
        };
        let v: Value = serde_json::from_slice(data)
            .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
        let mut v = self.strategy.storage_to_version(v);
        meta::set_resource_version(&mut v, kv.mod_revision);
        Ok(v)
    }

    /// The stored form of `obj` at `key` (encrypted when configured).
    pub(crate) fn encode(&self, key: &str, obj: &Value) -> Vec<u8> {
        let mut o = self.strategy.version_to_storage(obj.clone());
        meta::remove_meta(&mut o, "resourceVersion");
        let data = serde_json::to_vec(&o).expect("json");
        match &self.transformer {
            Some(t) => t.to_storage(key.as_bytes(), data),
            None => data,
        }
    }

    /// Whether `obj` matches the label and field selectors.
    pub fn matches(&self, obj: &Value, label: &LabelSelector, field: &FieldSelector) -> bool {
        if !label.is_empty() && !label.matches(&meta::labels(obj)) {
            return false;
        }
        field.is_empty() || field.matches(&self.selectable_fields(obj))
    }

    /// The field values a field selector is matched against.
    pub(crate) fn selectable_fields(&self, obj: &Value) -> Vec<(&'static str, String)> {
        let mut fields = vec![("metadata.name", meta::name(obj).to_string())];
        if self.strategy.info().namespaced {
            fields.push(("metadata.namespace", meta::namespace(obj).to_string()));
        }
        fields.extend(self.strategy.fields(obj));
        fields
    }

    /// 400 when the field selector names a field this resource cannot select on.
    pub fn check_field_selector(&self, field: &FieldSelector) -> Result<(), ApiError> {
        let mut names = vec!["metadata.name"];
        if self.strategy.info().namespaced {
            names.push("metadata.namespace");
        }
        names.extend_from_slice(self.strategy.field_names());
        match field.unsupported(&names) {
            Some(f) => Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            ))),
            None => Ok(()),
        }
    }

    pub(crate) async fn read(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<(Value, i64)>, ApiError> {
        let (kv, _) = kvutil::get(&*self.kv, self.key(ns, name).as_bytes()).await?;
        match kv {
            Some(kv) => Ok(Some((self.decode(&kv)?, kv.mod_revision))),
            None => Ok(None),
        }
    }

    pub async fn get(&self, ns: &str, name: &str) -> Result<Value, ApiError> {
        match self.read(ns, name).await? {
            Some((v, _)) => Ok(v),
            None => Err(self.not_found(name)),
        }
    }

    pub async fn list(&self, ns: &str, opts: &ListOptions) -> Result<ListResult, ApiError> {
        let mut items = vec![];
        let mut l = self.list_each(ns, opts, |obj| items.push(obj)).await?;
        l.items = items;
        Ok(l)
    }

    /// A list whose items are handed to `each` one by one as they are read, so that the whole
    /// list is never held decoded (the store is read in batches of `LIST_BATCH` at one revision).
    /// The result's `items` is empty.
    pub async fn list_each(
        &self,
        ns: &str,
        opts: &ListOptions,
        mut each: impl FnMut(Value) + Send,
    ) -> Result<ListResult, ApiError> {
        self.check_field_selector(&opts.field)?;
        let prefix = self.prefix(ns);
        let end = kvutil::prefix_end(prefix.as_bytes());
        let (mut rev, mut start) = (0i64, prefix.clone());
        if !opts.continue_token.is_empty() {
            let (r, s) = continuation::decode(&opts.continue_token)?;
            rev = r;
            start = format!("{prefix}{s}");
        } else if opts.resource_version_match == "Exact" {
            rev = opts.resource_version.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resource version {:?}",
                    opts.resource_version
                ))
            })?;
        }
        let filtered = !opts.label.is_empty() || !opts.field.is_empty();
        let mut found = 0i64;
        let mut next = String::new();
        let mut remaining = None;
        let batch = match (opts.limit > 0, filtered) {
            (false, _) => LIST_BATCH,
            (true, false) => opts.limit,
            (true, true) => opts.limit.max(100),
        };
        loop {
            let req = PbRangeRequest {
                key: start.clone().into_bytes(),
                range_end: end.clone(),
                revision: rev,
                limit: batch,
                ..Default::default()
            };
            let r = self.kv.range(req).await.map_err(|e| {
                let a = store_err(e);
                if a.code == 410 && !opts.continue_token.is_empty() {
                    continuation::expired()
                } else {
                    a
                }
            })?;
            if rev == 0 {
                rev = kvutil::header_rev(&r.header);
            }
            let n = r.kvs.len();
            let mut last_key = String::new();
            let mut stopped_at = None;
            for (i, kv) in r.kvs.iter().enumerate() {
                let obj = self.decode(kv)?;
                last_key = String::from_utf8_lossy(&kv.key).into_owned();
                if self.matches(&obj, &opts.label, &opts.field) {
                    each(obj);
                    found += 1;
                    if opts.limit > 0 && found >= opts.limit {
                        stopped_at = Some(i);
                        break;
                    }
                }
            }
            if let Some(i) = stopped_at {
                if i + 1 < n || r.more {
                    let rel = last_key.strip_prefix(&prefix).unwrap_or(&last_key);
                    next = continuation::encode(rev, &format!("{rel}\u{0}"));
                    if !filtered {
                        remaining = Some((r.count - n as i64).max(0));
                    }
                }
                break;
            }
            if !r.more || n == 0 {
                break;
            }
            start = format!("{last_key}\u{0}");
        }
        Ok(ListResult {
            items: vec![],
            resource_version: rev,
            continue_token: next,
            remaining,
        })
    }

    /// Checks that the namespace exists and is not being terminated (upstream's lifecycle admission).
    async fn check_namespace(&self, ns: &str, name: &str) -> Result<(), ApiError> {
        let (kv, _) =
            kvutil::get(&*self.kv, format!("/registry/namespaces/{ns}").as_bytes()).await?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found("", "namespaces", ns));
        };
        let plain = match &self.namespace_transformer {
            Some(t) => t.from_storage(&kv.key, &kv.value).map_err(|e| {
                ApiError::internal(format!("unable to transform namespace {ns:?}: {e}"))
            })?,
            None => kv.value,
        };
        let nsobj: Value = serde_json::from_slice(&plain).unwrap_or(Value::Null);
        if nsobj["status"]["phase"] == "Terminating" || meta::deletion_timestamp(&nsobj).is_some() {
            return Err(ApiError::forbidden(
                self.group(),
                self.resource(),
                name,
                &format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    fn set_type_meta(&self, obj: &mut Value) -> Result<(), ApiError> {
        let info = self.strategy.info();
        let want = info.api_version();
        if let Some(m) = obj.as_object_mut() {
            if let Some(av) = m.get("apiVersion").and_then(Value::as_str) {
                if !av.is_empty() && av != want {
                    return Err(ApiError::bad_request(format!(
                        "the API version in the data ({av}) does not match the expected API version ({want})"
                    )));
                }
            }
            if let Some(k) = m.get("kind").and_then(Value::as_str) {
                if !k.is_empty() && k != info.kind {
                    return Err(ApiError::bad_request(format!(
                        "the kind in the data ({k}) does not match the expected kind ({})",
                        info.kind
                    )));
                }
            }
            m.insert("apiVersion".into(), json!(want));
            m.insert("kind".into(), json!(info.kind));
            Ok(())
        } else {
            Err(ApiError::bad_request(
                "the body of the request is not a JSON object",
            ))
        }
    }

    fn set_namespace(&self, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
        if self.strategy.info().namespaced {
            let have = meta::namespace(obj).to_string();
            if have.is_empty() {
                meta::set_meta_str(obj, "namespace", ns);
            } else if have != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        } else {
            meta::remove_meta(obj, "namespace");
        }
        Ok(())
    }

    /// Validation, the typed round trip and field validation; the warnings to return.
    fn check(
        &self,
        obj: &Value,
        old: Option<&Value>,
        fv: FieldValidation,
        client_fields: &Value,
    ) -> Result<Vec<String>, ApiError> {
        let info = self.strategy.info();
        let name = meta::name(obj);
        let mut errs: Vec<FieldError> = vec![];
        if name.is_empty() {
            errs.push(FieldError::required(
                "metadata.name",
                "name or generateName is required",
            ));
        } else if old.is_none() {
            errs.extend(self.strategy_name_errors(name));
        }
        errs.extend(meta::validate_object_meta(obj));
        errs.extend(self.strategy.validate(obj));
        if let Some(old) = old {
            errs.extend(self.strategy.validate_update(obj, old));
        }
        if !errs.is_empty() {
            return Err(ApiError::invalid(info.group, info.kind, name, errs));
        }
        self.strategy.round_trip(obj).map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        if fv == FieldValidation::Ignore {
            return Ok(vec![]);
        }
        let unknown = self.strategy.round_trip(client_fields).unwrap_or_default();
        if unknown.is_empty() {
            return Ok(vec![]);
        }
        let msgs: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field {f:?}"))
            .collect();
        if fv == FieldValidation::Strict {
            return Err(ApiError::bad_request(format!(
                "{} in version {:?} cannot be handled as a {}: strict decoding error: {}",
                info.kind,
                info.version,
                info.kind,
                msgs.join(", ")
            )));
        }
        Ok(msgs)
    }

    /// Refuses (400) a body whose fields have the wrong JSON types before defaulting touches it;
    /// missing required fields are left to validation (422).
    fn check_shape(&self, obj: &Value) -> Result<(), ApiError> {
        match self.strategy.round_trip(obj) {
            Err(e) if !e.starts_with("missing field") => {
                let info = self.strategy.info();
                Err(ApiError::bad_request(format!(
                    "{} in version {:?} cannot be handled as a {}: {e}",
                    info.kind, info.version, info.kind
                )))
            }
            _ => Ok(()),
        }
    }

    fn strategy_name_errors(&self, name: &str) -> Vec<FieldError> {
        match self.strategy.info().resource {
            "namespaces" => meta::validate_dns_label("metadata.name", name),
            "services" => meta::validate_dns_label("metadata.name", name),
            _ => meta::validate_dns_subdomain("metadata.name", name),
        }
    }

    pub async fn create(
        &self,
        ns: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.set_type_meta(&mut obj)?;
        self.set_namespace(&mut obj, ns)?;
        let client = obj.clone();
        if !meta::resource_version(&obj).is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ] {
            meta::remove_meta(&mut obj, f);
        }
        let generate = meta::meta_str(&obj, "generateName").to_string();
        self.check_shape(&obj)?;
        self.strategy.prepare_for_create(&mut obj);
        meta::set_meta_str(&mut obj, "uid", &meta::new_uid());
        meta::set_meta_str(&mut obj, "creationTimestamp", &meta::now_rfc3339());
        if self.strategy.has_generation() {
            meta::metadata_mut(&mut obj).insert("generation".into(), json!(1));
        }
        if !opts.field_manager.is_empty() {
            let av = self.strategy.info().api_version();
            crate::apply::record_update(&mut obj, None, &opts.field_manager, &av, "");
        }
        self.strategy.default(&mut obj);
        self.strategy.initial_status(&mut obj);
        let use_generate = meta::name(&obj).is_empty() && !generate.is_empty();
        if use_generate {
            meta::set_meta_str(&mut obj, "name", &meta::generate_name(&generate));
        }
        let warnings = self.check(&obj, None, opts.field_validation, &client)?;
        let ns = meta::namespace(&obj).to_string();
        if self.strategy.info().namespaced {
            self.check_namespace(&ns, meta::name(&obj)).await?;
        }
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
                created: true,
            });
        }
        if let Some(h) = &self.hooks {
            h.before_create(&mut obj).await?;
        }
        for _ in 0..MAX_RETRIES {
            let key = self.key(&ns, meta::name(&obj));
            let lease = self.lease().await?;
            let res = kvutil::create_with_lease(
                &*self.kv,
                key.as_bytes(),
                self.encode(&key, &obj),
                lease,
            )
            .await;
            if res.is_err() || matches!(res, Ok(None)) {
                if let Some(h) = &self.hooks {
                    h.undo_create(&obj).await;
                }
            }
            if let Some(rev) = res? {
                meta::set_resource_version(&mut obj, rev);
                return Ok(Written {
                    object: obj,
                    warnings,
                    created: true,
                });
            }
            if !use_generate {
                break;
            }
            meta::set_meta_str(&mut obj, "name", &meta::generate_name(&generate));
        }
        Err(ApiError::already_exists(
            self.group(),
            self.resource(),
            meta::name(&obj),
        ))
    }

    /// PUT of the object or of its `status` subresource.
    pub async fn update(
        &self,
        ns: &str,
        name: &str,
        mut body: Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.set_type_meta(&mut body)?;
        self.set_namespace(&mut body, ns)?;
        let body_name = meta::name(&body).to_string();
        if body_name.is_empty() {
            meta::set_meta_str(&mut body, "name", name);
        } else if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let client_rv = meta::resource_version(&body).to_string();
        for _ in 0..MAX_RETRIES {
            let current = self.read(ns, name).await?;
            let Some((old, mod_rev)) = current else {
                if self.strategy.allow_create_on_update() && subresource.is_none() {
                    meta::remove_meta(&mut body, "resourceVersion");
                    return self.create(ns, body, opts).await;
                }
                return Err(self.not_found(name));
            };
            if !client_rv.is_empty() && client_rv != mod_rev.to_string() {
                return Err(ApiError::conflict_modified(
                    self.group(),
                    self.resource(),
                    name,
                ));
            }
            match self
                .write_update(ns, name, body.clone(), &old, mod_rev, subresource, opts)
                .await?
            {
                Some(w) => return Ok(w),
                None if !client_rv.is_empty() => {
                    return Err(ApiError::conflict_modified(
                        self.group(),
                        self.resource(),
                        name,
                    ))
                }
                None => continue,
            }
        }
        Err(ApiError::conflict_modified(
            self.group(),
            self.resource(),
            name,
        ))
    }

    /// One attempt to replace `old` (at `mod_rev`) by `body`; None when another write came first.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn write_update(
        &self,
        ns: &str,
        name: &str,
        body: Value,
        old: &Value,
        mod_rev: i64,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Option<Written>, ApiError> {
        let client = body.clone();
        self.check_shape(&body)?;
        let mut new = match subresource {
            Some("status") => {
                let mut n = old.clone();
                match body.get("status") {
                    Some(s) => n["status"] = s.clone(),
                    None => {
                        n.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                n
            }
            Some("finalize") if self.resource() == "namespaces" => {
                let mut n = old.clone();
                n["spec"]["finalizers"] = body["spec"]["finalizers"].clone();
                if n["spec"]["finalizers"].is_null() {
                    n["spec"]["finalizers"] = json!([]);
                }
                n
            }
            Some(other) => {
                return Err(ApiError::path_not_found_sub(self.resource(), other));
            }
            None => {
                let mut n = body;
                self.strategy.prepare_for_update(&mut n, old);
                n
            }
        };
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old.get("metadata").and_then(|m| m.get(f)) {
                Some(v) => {
                    meta::metadata_mut(&mut new).insert(f.into(), v.clone());
                }
                None => meta::remove_meta(&mut new, f),
            }
        }
        meta::remove_meta(&mut new, "selfLink");
        meta::set_resource_version(&mut new, mod_rev);
        self.strategy.default(&mut new);
        if new["metadata"].get("managedFields").is_none() {
            if let Some(mf) = old["metadata"].get("managedFields") {
                new["metadata"]["managedFields"] = mf.clone();
            }
        }
        if !opts.field_manager.is_empty() {
            let av = self.strategy.info().api_version();
            let sub = subresource.unwrap_or("");
            crate::apply::record_update(&mut new, Some(old), &opts.field_manager, &av, sub);
        }
        if self.strategy.has_generation() && spec_changed(&new, old) {
            let g = meta::generation(old) + 1;
            meta::metadata_mut(&mut new).insert("generation".into(), json!(g));
        }
        let warnings = self.check(&new, Some(old), opts.field_validation, &client)?;
        if &new == old {
            return Ok(Some(Written {
                object: new,
                warnings,
                created: false,
            }));
        }
        if opts.dry_run {
            return Ok(Some(Written {
                object: new,
                warnings,
                created: false,
            }));
        }
        let key = self.key(ns, name);
        // Removing the last finalizer of an object being deleted completes its deletion.
        if meta::deletion_timestamp(&new).is_some() && self.strategy.finalized(&new) {
            return match kvutil::delete(&*self.kv, key.as_bytes(), mod_rev).await? {
                Some(rev) => {
                    if let Some(h) = &self.hooks {
                        h.after_delete(&new).await;
                    }
                    meta::set_resource_version(&mut new, rev);
                    Ok(Some(Written {
                        object: new,
                        warnings,
                        created: false,
                    }))
                }
                None => Ok(None),
            };
        }
        let lease = self.lease().await?;
        match kvutil::update_with_lease(
            &*self.kv,
            key.as_bytes(),
            mod_rev,
            self.encode(&key, &new),
            lease,
        )
        .await?
        {
            Some(rev) => {
                meta::set_resource_version(&mut new, rev);
                Ok(Some(Written {
                    object: new,
                    warnings,
                    created: false,
                }))
            }
            None => Ok(None),
        }
    }

    pub async fn patch(
        &self,
        ns: &str,
        name: &str,
        ptype: PatchType,
        body: &Value,
        subresource: Option<&str>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if ptype == PatchType::Apply {
            return Err(ApiError::bad_request(
                "apply patches go through GenericStore::apply",
            ));
        }
        for _ in 0..MAX_RETRIES {
            let Some((old, mod_rev)) = self.read(ns, name).await? else {
                return Err(self.not_found(name));
            };
            let mut doc = if subresource == Some("scale") {
                self.scale_of(&old)
            } else {
                old.clone()
            };
            match ptype {
                PatchType::Json => patch::json_patch(&mut doc, body)?,
                PatchType::Merge => patch::merge_patch(&mut doc, body)?,
                PatchType::Strategic => patch::strategic_merge_patch(&mut doc, body)?,
                PatchType::Apply => unreachable!(),
            }
            let patched_rv = meta::resource_version(&doc).to_string();
            if !patched_rv.is_empty() && patched_rv != mod_rev.to_string() {
                return Err(ApiError::conflict_modified(
                    self.group(),
                    self.resource(),
                    name,
                ));
            }
            if subresource == Some("scale") {
                doc = self.apply_scale(&old, &doc)?;
            }
            let sub = if subresource == Some("scale") {
                None
            } else {
                subresource
            };
            if let Some(w) = self
                .write_update(ns, name, doc, &old, mod_rev, sub, opts)
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

/// Whether anything but metadata and status differs (what bumps `metadata.generation`).
fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
            m.remove("status");
        }
        v
    };
    strip(new) != strip(old)
}

trait SubNotFound {
    fn path_not_found_sub(resource: &str, sub: &str) -> ApiError;
}

impl SubNotFound for ApiError {
    fn path_not_found_sub(resource: &str, sub: &str) -> ApiError {
        ApiError::not_found("", &format!("{resource}/{sub}"), "")
    }
}
