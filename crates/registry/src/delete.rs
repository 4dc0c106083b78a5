//! Delete and deletecollection: preconditions, finalizers and graceful deletion mark the object
//! (deletionTimestamp); otherwise it leaves the store at once.

use apimachinery::{meta, ApiError};
use serde_json::json;

use crate::kvutil;
use crate::store::{
    DeleteOptions, Deleted, GenericStore, ListOptions, ListResult, Propagation, MAX_RETRIES,
};
use crate::strategy::DeleteMode;

impl GenericStore {
    pub async fn delete(
        &self,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Deleted, ApiError> {
        for _ in 0..MAX_RETRIES {
            let Some((obj, mod_rev)) = self.read(ns, name).await? else {
                return Err(self.not_found(name));
            };
            if let Some(uid) = &opts.precondition_uid {
                if uid != meta::uid(&obj) {
                    return Err(ApiError::conflict(
                        self.group(),
                        self.resource(),
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                            meta::uid(&obj)
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.precondition_rv {
                if *rv != mod_rev.to_string() {
                    return Err(ApiError::conflict(
                        self.group(),
                        self.resource(),
                        name,
                        &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {mod_rev}"),
                    ));
                }
            }
            // The garbage collector's finalizers follow the propagation policy (as upstream's
            // deletionFinalizersForGarbageCollection); a repeated delete may change them.
            let original = obj;
            let mut obj = original.clone();
            set_gc_finalizers(&mut obj, opts.propagation);
            let mode = self.strategy.delete_mode(&obj, opts.grace_period_seconds);
            let has_finalizers =
                !meta::finalizers(&obj).is_empty() || self.strategy.info().resource == "namespaces";
            if has_finalizers || matches!(mode, DeleteMode::Graceful(_)) {
                if meta::deletion_timestamp(&obj).is_some()
                    && !matches!(mode, DeleteMode::Now)
                    && obj == original
                {
                    return Ok(Deleted::Pending(obj));
                }
                if has_finalizers || matches!(mode, DeleteMode::Graceful(g) if g > 0) {
                    let mut marked = obj.clone();
                    let grace = match mode {
                        DeleteMode::Graceful(g) => g,
                        DeleteMode::Now => 0,
                    };
                    let when = jiff::Timestamp::now()
                        .checked_add(jiff::SignedDuration::from_secs(grace))
                        .unwrap_or_else(|_| jiff::Timestamp::now());
                    if meta::deletion_timestamp(&obj).is_none() {
                        meta::set_meta_str(
                            &mut marked,
                            "deletionTimestamp",
                            &meta::format_time(when),
                        );
                        meta::metadata_mut(&mut marked)
                            .insert("deletionGracePeriodSeconds".into(), json!(grace));
                    }
                    if self.strategy.info().resource == "namespaces" {
                        marked["status"]["phase"] = json!("Terminating");
                    }
                    if opts.dry_run || marked == original {
                        return Ok(Deleted::Pending(marked));
                    }
                    let key = self.key(ns, name);
                    if let Some(rev) = kvutil::update(
                        &*self.kv,
                        key.as_bytes(),
                        mod_rev,
                        self.encode(&key, &marked),
                    )
                    .await?
                    {
                        meta::set_resource_version(&mut marked, rev);
                        return Ok(Deleted::Pending(marked));
                    }
                    continue;
                }
            }
            if opts.dry_run {
                return Ok(Deleted::Gone(obj));
            }
            let key = self.key(ns, name);
            if kvutil::delete(&*self.kv, key.as_bytes(), mod_rev)
                .await?
                .is_some()
            {
                if let Some(h) = &self.hooks {
                    h.after_delete(&obj).await;
                }
                return Ok(Deleted::Gone(obj));
            }
        }
        Err(ApiError::conflict_modified(
            self.group(),
            self.resource(),
            name,
        ))
    }

    /// Deletes every object a list with these options returns; the deleted objects.
    pub async fn delete_collection(
        &self,
        ns: &str,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<ListResult, ApiError> {
        let mut res = self.list(ns, list).await?;
        let mut deleted = vec![];
        for item in &res.items {
            match self
                .delete(meta::namespace(item), meta::name(item), opts)
                .await
            {
                Ok(Deleted::Gone(v)) | Ok(Deleted::Pending(v)) => deleted.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        res.items = deleted;
        Ok(res)
    }
}

/// The finalizer that makes the garbage collector orphan an object's dependents first.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// The finalizer that makes the garbage collector delete blocking dependents first.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Adds or removes the `orphan` and `foregroundDeletion` finalizers as `policy` asks; without a
/// policy the object's own finalizers stand (every resource here defaults to Background).
fn set_gc_finalizers(obj: &mut serde_json::Value, policy: Option<Propagation>) {
    let Some(policy) = policy else {
        return;
    };
    let (orphan, foreground) = match policy {
        Propagation::Orphan => (true, false),
        Propagation::Foreground => (false, true),
        Propagation::Background => (false, false),
    };
    let current: Vec<String> = meta::finalizers(obj)
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut next: Vec<String> = current
        .iter()
        .filter(|f| *f != ORPHAN_FINALIZER && *f != FOREGROUND_FINALIZER)
        .cloned()
        .collect();
    if orphan {
        next.push(ORPHAN_FINALIZER.into());
    }
    if foreground {
        next.push(FOREGROUND_FINALIZER.into());
    }
    let same = next.len() == current.len() && next.iter().all(|f| current.contains(f));
    if same {
        return;
    }
    let m = meta::metadata_mut(obj);
    if next.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(next));
    }
}
