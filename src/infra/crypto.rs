//! Secrets at rest: AES-256-GCM with `SECRETS_KEY`, a fresh random nonce per value, and a
//! prefix naming the scheme and the key, so keys can be rotated: values sealed with a key listed
//! in `SECRETS_KEY_PREVIOUS` still open, and `multipult secrets rotate` re-seals every stored
//! value with the current key (docs/security.md, "Rotating SECRETS_KEY").
//!
//! Stored form: `v2:<key id>:` + base64(nonce ‖ ciphertext ‖ tag); the key id is 8 hex digits of
//! a hash of the key (never the key). Values written before key ids (`v1:` + base64) are opened
//! with whichever configured key fits.

use aes_gcm::aead::{Aead as _, Generate as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use secrecy::ExposeSecret as _;

use crate::config::{Settings, decode_secrets_key};

const V1: &str = "v1:";
const V2: &str = "v2:";
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("SECRETS_KEY is not a 32-byte key")]
    BadKey,
    #[error("encryption failed")]
    Encrypt,
    #[error("a stored secret cannot be decrypted (wrong SECRETS_KEY, or tampered)")]
    Decrypt,
}

#[derive(Clone)]
struct SealingKey {
    id: String,
    cipher: Aes256Gcm,
    /// HMAC key for fingerprints, derived from the secrets key (never the key itself).
    mac_key: [u8; 32],
}

impl SealingKey {
    fn new(key: [u8; 32]) -> Self {
        use sha2::Digest as _;
        let derive = |label: &[u8]| -> [u8; 32] {
            let mut hasher = sha2::Sha256::new();
            hasher.update(label);
            hasher.update(key);
            hasher.finalize().into()
        };
        Self {
            id: hex::encode(&derive(b"multipult key id\0")[..4]),
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
            mac_key: derive(b"multipult fingerprint key\0"),
        }
    }

    fn fingerprint(&self, value: &[u8]) -> String {
        use hmac::{KeyInit as _, Mac as _};
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.mac_key) else {
            return String::new();
        };
        mac.update(value);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn open(&self, bytes: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if bytes.len() <= NONCE_LEN {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| CryptoError::Decrypt)?;
        self.cipher
            .decrypt(&nonce, ciphertext)
            .map_err(|_| CryptoError::Decrypt)
    }
}

/// Seals and opens secrets; the current key first, then the previous ones (opening only).
#[derive(Clone)]
pub struct SecretBox {
    keys: Vec<SealingKey>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// # Errors
    /// `SECRETS_KEY` (or one of `SECRETS_KEY_PREVIOUS`) does not decode to 32 bytes.
    pub fn from_settings(settings: &Settings) -> Result<Self, CryptoError> {
        let secrets = &settings.secrets;
        std::iter::once(&secrets.secrets_key)
            .chain(&secrets.previous_secrets_keys)
            .map(|key| decode_secrets_key(key.expose_secret()).ok_or(CryptoError::BadKey))
            .collect::<Result<Vec<_>, _>>()
            .map(|keys| Self::from_keys(&keys))
    }

    fn from_keys(keys: &[[u8; 32]]) -> Self {
        Self {
            keys: keys.iter().copied().map(SealingKey::new).collect(),
        }
    }

    fn current(&self) -> &SealingKey {
        &self.keys[0]
    }

    /// The id of the key new values are sealed with (stored beside them where a feature wants
    /// to know which rows still need re-sealing).
    pub fn key_id(&self) -> &str {
        &self.current().id
    }

    /// A keyed, one-way fingerprint of a value (HMAC-SHA256, 128 bits, hex), with the current
    /// key: lets the audit log group attempts by what was typed without storing it, and cannot
    /// be reversed by someone who reads the database without the key.
    pub fn fingerprint(&self, value: &[u8]) -> String {
        self.current().fingerprint(value)
    }

    /// The value's fingerprint under every configured key, the current one first: what a lookup
    /// by fingerprint matches while an old key is still listed in `SECRETS_KEY_PREVIOUS`.
    pub fn fingerprints(&self, value: &[u8]) -> Vec<String> {
        self.keys.iter().map(|key| key.fingerprint(value)).collect()
    }

    /// `v2:<key id>:` + base64(nonce ‖ ciphertext ‖ tag).
    ///
    /// # Errors
    /// The cipher fails (internal).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let key = self.current();
        let nonce = Nonce::generate();
        let ciphertext = key
            .cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(format!(
            "{V2}{}:{}",
            key.id,
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// # Errors
    /// No configured key fits, unknown format or tampered data.
    pub fn decrypt(&self, stored: &str) -> Result<Vec<u8>, CryptoError> {
        let decode = |text: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| CryptoError::Decrypt)
        };
        if let Some(rest) = stored.strip_prefix(V2) {
            let (id, encoded) = rest.split_once(':').ok_or(CryptoError::Decrypt)?;
            let key = self
                .keys
                .iter()
                .find(|key| key.id == id)
                .ok_or(CryptoError::Decrypt)?;
            return key.open(&decode(encoded)?);
        }
        let bytes = decode(stored.strip_prefix(V1).ok_or(CryptoError::Decrypt)?)?;
        self.keys
            .iter()
            .find_map(|key| key.open(&bytes).ok())
            .ok_or(CryptoError::Decrypt)
    }

    /// Whether a stored value is sealed with another key than the current one (or the old
    /// format): what `multipult secrets rotate` re-seals.
    pub fn is_stale(&self, stored: &str) -> bool {
        stored
            .strip_prefix(V2)
            .and_then(|rest| rest.split_once(':'))
            .is_none_or(|(id, _)| id != self.key_id())
    }

    /// Opens a value with any configured key and seals it with the current one.
    ///
    /// # Errors
    /// The value cannot be opened.
    pub fn reseal(&self, stored: &str) -> Result<String, CryptoError> {
        self.encrypt(&self.decrypt(stored)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_tampering_is_detected() {
        let secret_box = SecretBox::from_keys(&[[7u8; 32]]);
        let sealed = secret_box.encrypt(b"JBSWY3DPEHPK3PXP").unwrap();
        assert!(sealed.starts_with(&format!("v2:{}:", secret_box.key_id())));
        assert_ne!(
            secret_box.encrypt(b"JBSWY3DPEHPK3PXP").unwrap(),
            sealed,
            "fresh nonce each time"
        );
        assert_eq!(secret_box.decrypt(&sealed).unwrap(), b"JBSWY3DPEHPK3PXP");

        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            secret_box
                .decrypt(&String::from_utf8(tampered).unwrap())
                .is_err()
        );

        let other = SecretBox::from_keys(&[[9u8; 32]]);
        assert!(other.decrypt(&sealed).is_err());
    }

    #[test]
    fn a_rotated_key_still_opens_old_values_and_reseals_them() {
        let old = SecretBox::from_keys(&[[7u8; 32]]);
        let sealed = old.encrypt(b"sk-lf-secret").unwrap();
        let rotated = SecretBox::from_keys(&[[9u8; 32], [7u8; 32]]);
        assert_ne!(rotated.key_id(), old.key_id());
        assert_eq!(rotated.decrypt(&sealed).unwrap(), b"sk-lf-secret");
        assert!(rotated.is_stale(&sealed));
        let resealed = rotated.reseal(&sealed).unwrap();
        assert!(!rotated.is_stale(&resealed));
        let only_new = SecretBox::from_keys(&[[9u8; 32]]);
        assert_eq!(only_new.decrypt(&resealed).unwrap(), b"sk-lf-secret");
        assert!(only_new.decrypt(&sealed).is_err());
        // Values from before key ids open with whichever key fits.
        let v1 = format!("v1:{}", sealed.splitn(3, ':').nth(2).unwrap());
        assert_eq!(rotated.decrypt(&v1).unwrap(), b"sk-lf-secret");
        assert!(rotated.is_stale(&v1));
        assert_eq!(
            rotated.fingerprints(b"x")[1],
            old.fingerprint(b"x"),
            "old fingerprints still match"
        );
    }
}
