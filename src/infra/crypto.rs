//! Secrets at rest: AES-256-GCM with `SECRETS_KEY`, a fresh random nonce per value, and a version
//! prefix so the scheme (or key) can change later without ambiguity.

use aes_gcm::aead::{Aead as _, Generate as _, KeyInit as _};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use secrecy::ExposeSecret as _;

use crate::config::{Settings, decode_secrets_key};

const PREFIX: &str = "v1:";
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
pub struct SecretBox {
    cipher: Aes256Gcm,
    /// HMAC key for fingerprints, derived from the secrets key (never the key itself).
    mac_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

impl SecretBox {
    /// # Errors
    /// `SECRETS_KEY` does not decode to 32 bytes.
    pub fn from_settings(settings: &Settings) -> Result<Self, CryptoError> {
        let key = decode_secrets_key(settings.secrets.secrets_key.expose_secret())
            .ok_or(CryptoError::BadKey)?;
        Ok(Self::from_key(key))
    }

    fn from_key(key: [u8; 32]) -> Self {
        use sha2::Digest as _;
        let mut derive = sha2::Sha256::new();
        derive.update(b"multipult fingerprint key\0");
        derive.update(key);
        Self {
            cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)),
            mac_key: derive.finalize().into(),
        }
    }

    /// A keyed, one-way fingerprint of a value (HMAC-SHA256, 128 bits, hex): lets the audit log
    /// group attempts by what was typed without storing it, and cannot be reversed by someone who
    /// reads the database without the key.
    pub fn fingerprint(&self, value: &[u8]) -> String {
        use hmac::{KeyInit as _, Mac as _};
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.mac_key) else {
            return String::new();
        };
        mac.update(value);
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// `v1:` + base64(nonce ‖ ciphertext ‖ tag).
    ///
    /// # Errors
    /// The cipher fails (internal).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<String, CryptoError> {
        let nonce = Nonce::generate();
        let ciphertext = self
            .cipher
            .encrypt(&nonce, plaintext)
            .map_err(|_| CryptoError::Encrypt)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// # Errors
    /// Wrong key, unknown format or tampered data.
    pub fn decrypt(&self, stored: &str) -> Result<Vec<u8>, CryptoError> {
        let encoded = stored.strip_prefix(PREFIX).ok_or(CryptoError::Decrypt)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| CryptoError::Decrypt)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_tampering_is_detected() {
        let secret_box = SecretBox::from_key([7u8; 32]);
        let sealed = secret_box.encrypt(b"JBSWY3DPEHPK3PXP").unwrap();
        assert!(sealed.starts_with("v1:"));
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

        let other = SecretBox::from_key([9u8; 32]);
        assert!(other.decrypt(&sealed).is_err());
    }
}
