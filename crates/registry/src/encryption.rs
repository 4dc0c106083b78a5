//! Encryption at rest, configured as upstream's `EncryptionConfiguration`
//! (apiserver.config.k8s.io/v1): per resource a list of providers, the first one encrypts every
//! write, each one in turn is tried on a read. Providers: `aesgcm` (AES-GCM with 16, 24 or 32
//! byte keys, stored as `k8s:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext+tag>`, the
//! storage key as authenticated data, as upstream) and `identity` (plaintext).
//!
//! Rotation, as upstream: put a new key first (old keys after it still decrypt), then rewrite the
//! objects (any update re-encrypts them with the first key).

use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use base64::Engine;
use serde::Deserialize;

type Aes192Gcm = AesGcm<Aes192, aes_gcm::aead::consts::U12>;

const ENC_PREFIX: &[u8] = b"k8s:enc:";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigFile {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceConfig>,
}

#[derive(Deserialize)]
struct ResourceConfig {
    resources: Option<Vec<String>>,
    providers: Option<Vec<ProviderConfig>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProviderConfig {
    aesgcm: Option<KeysConfig>,
    identity: Option<serde_json::Value>,
    aescbc: Option<serde_json::Value>,
    secretbox: Option<serde_json::Value>,
    kms: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct KeysConfig {
    keys: Option<Vec<KeyConfig>>,
}

#[derive(Deserialize)]
struct KeyConfig {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

enum Cipher {
    A128(Box<Aes128Gcm>),
    A192(Box<Aes192Gcm>),
    A256(Box<Aes256Gcm>),
}

impl Cipher {
    fn new(key: &[u8]) -> Option<Cipher> {
        Some(match key.len() {
            16 => Cipher::A128(Box::new(Aes128Gcm::new_from_slice(key).ok()?)),
            24 => Cipher::A192(Box::new(Aes192Gcm::new_from_slice(key).ok()?)),
            32 => Cipher::A256(Box::new(Aes256Gcm::new_from_slice(key).ok()?)),
            _ => return None,
        })
    }

    fn seal(&self, nonce: &[u8], p: Payload) -> Vec<u8> {
        let n = aes_gcm::Nonce::from_slice(nonce);
        match self {
            Cipher::A128(c) => c.encrypt(n, p),
            Cipher::A192(c) => c.encrypt(n, p),
            Cipher::A256(c) => c.encrypt(n, p),
        }
        .expect("AES-GCM seals any object the store accepts")
    }

    fn open(&self, nonce: &[u8], p: Payload) -> Option<Vec<u8>> {
        let n = aes_gcm::Nonce::from_slice(nonce);
        match self {
            Cipher::A128(c) => c.decrypt(n, p),
            Cipher::A192(c) => c.decrypt(n, p),
            Cipher::A256(c) => c.decrypt(n, p),
        }
        .ok()
    }
}

enum Provider {
    AesGcm(Vec<(String, Cipher)>),
    Identity,
}

/// The providers of one set of resources, in order.
pub struct Transformer {
    providers: Vec<Provider>,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self
            .providers
            .iter()
            .map(|p| match p {
                Provider::AesGcm(k) => format!(
                    "aesgcm[{}]",
                    k.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Provider::Identity => "identity".into(),
            })
            .collect();
        write!(f, "Transformer({})", names.join(", "))
    }
}

impl Transformer {
    /// The stored form of `data` at `key` (encrypted by the first provider).
    pub fn to_storage(&self, key: &[u8], data: Vec<u8>) -> Vec<u8> {
        match self.providers.first() {
            Some(Provider::AesGcm(keys)) => {
                let (name, cipher) = &keys[0];
                let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
                let sealed = cipher.seal(
                    &nonce,
                    Payload {
                        msg: &data,
                        aad: key,
                    },
                );
                let mut out = format!("k8s:enc:aesgcm:v1:{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&sealed);
                out
            }
            Some(Provider::Identity) | None => data,
        }
    }

    /// The plaintext of a stored value, by the first provider that recognizes it.
    pub fn from_storage(&self, key: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
        for p in &self.providers {
            match p {
                Provider::Identity if !data.starts_with(ENC_PREFIX) => return Ok(data.to_vec()),
                Provider::Identity => {}
                Provider::AesGcm(keys) => {
                    for (name, cipher) in keys {
                        let prefix = format!("k8s:enc:aesgcm:v1:{name}:");
                        let Some(rest) = data.strip_prefix(prefix.as_bytes()) else {
                            continue;
                        };
                        if rest.len() < 12 {
                            return Err("the stored data was shorter than the required size".into());
                        }
                        let (nonce, sealed) = rest.split_at(12);
                        return cipher
                            .open(
                                nonce,
                                Payload {
                                    msg: sealed,
                                    aad: key,
                                },
                            )
                            .ok_or_else(|| {
                                format!("aesgcm key {name:?} cannot decrypt the stored data")
                            });
                    }
                }
            }
        }
        Err("no matching prefix found".into())
    }
}

/// The parsed configuration: which transformer each resource uses.
#[derive(Clone, Debug, Default)]
pub struct Encryption {
    rules: Vec<(Vec<String>, Arc<Transformer>)>,
}

impl Encryption {
    /// Parses an EncryptionConfiguration (YAML or JSON).
    pub fn parse(text: &str) -> Result<Encryption, String> {
        let f: ConfigFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        if f.kind != "EncryptionConfiguration" {
            return Err(format!("kind {:?}: want EncryptionConfiguration", f.kind));
        }
        if f.api_version != "apiserver.config.k8s.io/v1" {
            return Err(format!(
                "apiVersion {:?}: want apiserver.config.k8s.io/v1",
                f.api_version
            ));
        }
        let mut rules = vec![];
        for (i, rc) in f.resources.into_iter().enumerate() {
            let at = format!("resources[{i}]");
            let names = rc.resources.unwrap_or_default();
            if names.is_empty() {
                return Err(format!("{at}.resources: Required value"));
            }
            let ps = rc.providers.unwrap_or_default();
            if ps.is_empty() {
                return Err(format!("{at}.providers: Required value"));
            }
            let mut providers = vec![];
            for (j, p) in ps.into_iter().enumerate() {
                providers.push(provider(p, &format!("{at}.providers[{j}]"))?);
            }
            let t = Arc::new(Transformer { providers });
            rules.push((names, t));
        }
        Ok(Encryption { rules })
    }

    /// A new configuration encrypting secrets with a fresh random AES-256 key (and reading
    /// plaintext ones written before), as YAML.
    pub fn generate_default() -> String {
        let key = Aes256Gcm::generate_key(&mut OsRng);
        let secret = base64::engine::general_purpose::STANDARD.encode(key);
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
             - resources:\n  - secrets\n  providers:\n  - aesgcm:\n      keys:\n      - name: key1\n        \
             secret: {secret}\n  - identity: {{}}\n"
        )
    }

    /// The transformer of `resource` in `group` (the first rule naming it, `resource.group`,
    /// `*.group` or `*.*`), if any.
    pub fn for_resource(&self, group: &str, resource: &str) -> Option<Arc<Transformer>> {
        let full = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let star = format!("*.{group}");
        self.rules
            .iter()
            .find(|(names, _)| {
                names.iter().any(|n| {
                    *n == full || *n == star || n == "*.*" || (group.is_empty() && n == "*.")
                })
            })
            .map(|(_, t)| t.clone())
    }
}

fn provider(p: ProviderConfig, at: &str) -> Result<Provider, String> {
    let set = [
        p.aesgcm.is_some(),
        p.identity.is_some(),
        p.aescbc.is_some(),
        p.secretbox.is_some(),
        p.kms.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(format!(
            "{at}: Invalid value: exactly one provider must be configured"
        ));
    }
    if p.identity.is_some() {
        return Ok(Provider::Identity);
    }
    let Some(k) = p.aesgcm else {
        return Err(format!(
            "{at}: only the aesgcm and identity providers are supported by this server"
        ));
    };
    let k = k.keys.unwrap_or_default();
    if k.is_empty() {
        return Err(format!("{at}.aesgcm.keys: Required value"));
    }
    let mut keys = vec![];
    for (i, key) in k.into_iter().enumerate() {
        let kat = format!("{at}.aesgcm.keys[{i}]");
        if key.name.is_empty() {
            return Err(format!("{kat}.name: Required value"));
        }
        if key.name.contains(':') {
            return Err(format!(
                "{kat}.name: Invalid value: {:?}: should not contain ':'",
                key.name
            ));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key.secret.trim())
            .map_err(|_| {
                format!("{kat}.secret: Invalid value: \"REDACTED\": secrets must be base64 encoded")
            })?;
        let c = Cipher::new(&raw).ok_or_else(|| {
            format!(
                "{kat}.secret: Invalid value: \"REDACTED\": secret is not of the expected length, got {}, expected one of [16 24 32]",
                raw.len()
            )
        })?;
        keys.push((key.name, c));
    }
    Ok(Provider::AesGcm(keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(keys: &[(&str, &str)]) -> String {
        let mut s = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n".to_string();
        for (n, k) in keys {
            s.push_str(&format!("      - name: {n}\n        secret: {k}\n"));
        }
        s
    }

    const K1: &str = "c2VjcmV0IGlzIHNlY3VyZSwgdGhpcyBpcyAzMiBieXQ="; // 32 bytes
    const K2: &str = "MTIzNDU2Nzg5MDEyMzQ1Ng=="; // 16 bytes

    #[test]
    fn encrypts_with_the_first_key_and_reads_with_any() {
        let one = Encryption::parse(&cfg(&[("key1", K1)])).unwrap();
        let t1 = one.for_resource("", "secrets").unwrap();
        assert!(one.for_resource("", "configmaps").is_none());
        let stored = t1.to_storage(b"/registry/secrets/a/b", b"plain".to_vec());
        assert!(stored.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert_eq!(
            t1.from_storage(b"/registry/secrets/a/b", &stored).unwrap(),
            b"plain"
        );
        // The key is authenticated: the value does not decrypt under another key name.
        assert!(t1.from_storage(b"/registry/secrets/a/c", &stored).is_err());
        assert!(t1.from_storage(b"k", b"plain").is_err());

        let two = Encryption::parse(&cfg(&[("key2", K2), ("key1", K1)])).unwrap();
        let t2 = two.for_resource("", "secrets").unwrap();
        assert_eq!(
            t2.from_storage(b"/registry/secrets/a/b", &stored).unwrap(),
            b"plain"
        );
        let again = t2.to_storage(b"/registry/secrets/a/b", b"plain".to_vec());
        assert!(again.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
    }

    #[test]
    fn bad_configurations() {
        let e = Encryption::parse(&cfg(&[("key1", "c2hvcnQ=")])).unwrap_err();
        assert!(e.contains("expected one of [16 24 32]"), "{e}");
        let e = Encryption::parse(&cfg(&[])).unwrap_err();
        assert!(e.contains("keys: Required value"), "{e}");
        let e = Encryption::parse("kind: Foo\n").unwrap_err();
        assert!(e.contains("EncryptionConfiguration"), "{e}");
        let d = Encryption::parse(&Encryption::generate_default()).unwrap();
        let t = d.for_resource("", "secrets").unwrap();
        assert_eq!(t.from_storage(b"k", b"{}").unwrap(), b"{}");
    }
}
