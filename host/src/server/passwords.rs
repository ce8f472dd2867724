//! Password checks for the demo login (argon2id), off the async executor,
//! with the same work for unknown users so timing does not tell them apart.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::config::User;

/// Usernames (normalised) to PHC hashes.
#[derive(Clone)]
pub struct Users {
    hashes: Arc<HashMap<String, String>>,
    dummy: Arc<String>,
}

/// An argon2id PHC string for `password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

fn verify(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(h) => Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok(),
        Err(_) => false,
    }
}

impl Users {
    /// From config; no users → the demo user `demo` / `demo-password`.
    pub fn from_config(users: &[User]) -> Users {
        let mut hashes = HashMap::new();
        for u in users {
            hashes.insert(u.name.clone(), u.password_hash.clone());
        }
        if hashes.is_empty() {
            hashes.insert(
                "demo".into(),
                hash_password("demo-password").unwrap_or_default(),
            );
        }
        let dummy = hash_password("not a real password").unwrap_or_default();
        Users {
            hashes: Arc::new(hashes),
            dummy: Arc::new(dummy),
        }
    }

    /// Check a password (blocking; call from `spawn_blocking`).
    pub fn check(&self, username: &str, password: &str) -> bool {
        let name = username.trim().to_ascii_lowercase();
        match self.hashes.get(&name) {
            Some(h) => verify(h, password),
            None => {
                let _ = verify(&self.dummy, password);
                false
            }
        }
    }
}
