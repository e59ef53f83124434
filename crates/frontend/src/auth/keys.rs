//! Accounts and access keys: who may sign requests, and for which account.
//!
//! Records live in the [`MetaStore`] (`auth/accounts/<id>`,
//! `auth/keys/<access key id>`) and are cached in memory: a request is
//! authenticated without a store read. A key's secret is kept, since SigV4
//! needs it to recompute signatures; it is returned once, by
//! [`Keys::create_key`], and never again (listings carry [`KeyInfo`],
//! which has none). The server's admin key is not stored: it comes from
//! the configuration on every start (see [`AdminKey`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use stratus_store::{MetaStore, Precondition, StoreError};
use stratus_types::AccountId;

use super::sigv4::Credentials;

const ACCOUNTS: &str = "auth/accounts/";
const KEYS: &str = "auth/keys/";

/// The server's admin key: it may call the admin API, and it acts for the
/// default account. Configured, never stored.
#[derive(Debug, Clone)]
pub struct AdminKey {
    pub credentials: Credentials,
    pub account: AccountId,
}

/// A stored access key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyRecord {
    access_key_id: String,
    account_id: AccountId,
    secret_access_key: String,
    created: String,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("access_key_id", &self.access_key_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// What the admin API shows of a key: everything but the secret.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyInfo {
    pub access_key_id: String,
    pub account_id: AccountId,
    pub created: String,
}

/// An account record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccountInfo {
    pub account_id: AccountId,
    pub created: String,
}

/// Who a verified key belongs to.
#[derive(Debug, Clone)]
pub struct KeyOwner {
    pub secret: String,
    pub account: AccountId,
    pub admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored record {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
    #[error("account {0} not found")]
    NoAccount(AccountId),
    #[error("account {0} already exists")]
    AccountExists(AccountId),
    #[error("access key {0} not found")]
    NoKey(String),
}

/// The accounts and keys, cached in memory and written through to the store.
#[derive(Debug)]
pub struct Keys {
    store: Arc<dyn MetaStore>,
    admin: AdminKey,
    keys: RwLock<HashMap<String, KeyRecord>>,
    accounts: RwLock<BTreeMap<AccountId, AccountInfo>>,
}

fn corrupt(key: &str, e: impl ToString) -> KeysError {
    KeysError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    }
}

async fn scan_all<T: for<'de> Deserialize<'de>>(
    store: &dyn MetaStore,
    prefix: &str,
) -> Result<Vec<T>, KeysError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.scan(prefix, after.as_deref(), 1000).await?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        after = Some(last.clone());
        for (k, v) in page {
            out.push(serde_json::from_slice(&v.value).map_err(|e| corrupt(&k, e))?);
        }
    }
}

/// `count` characters drawn from `alphabet`.
fn random_string(alphabet: &[u8], count: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())]))
        .collect()
}

impl Keys {
    /// Loads every account and key from the store.
    pub async fn load(store: Arc<dyn MetaStore>, admin: AdminKey) -> Result<Keys, KeysError> {
        let keys: Vec<KeyRecord> = scan_all(store.as_ref(), KEYS).await?;
        let accounts: Vec<AccountInfo> = scan_all(store.as_ref(), ACCOUNTS).await?;
        Ok(Keys {
            store,
            admin,
            keys: RwLock::new(
                keys.into_iter()
                    .map(|k| (k.access_key_id.clone(), k))
                    .collect(),
            ),
            accounts: RwLock::new(
                accounts
                    .into_iter()
                    .map(|a| (a.account_id.clone(), a))
                    .collect(),
            ),
        })
    }

    /// The owner and secret of an access key, if the server knows it.
    pub fn lookup(&self, access_key_id: &str) -> Option<KeyOwner> {
        if access_key_id == self.admin.credentials.access_key_id {
            return Some(KeyOwner {
                secret: self.admin.credentials.secret.clone(),
                account: self.admin.account.clone(),
                admin: true,
            });
        }
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(access_key_id).map(|k| KeyOwner {
            secret: k.secret_access_key.clone(),
            account: k.account_id.clone(),
            admin: false,
        })
    }

    fn account_exists(&self, account: &AccountId) -> bool {
        *account == self.admin.account
            || self
                .accounts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .contains_key(account)
    }

    /// Creates an account: `id`, or a new random one.
    pub async fn create_account(
        &self,
        id: Option<AccountId>,
        now: String,
    ) -> Result<AccountInfo, KeysError> {
        let id = match id {
            Some(id) if self.account_exists(&id) => return Err(KeysError::AccountExists(id)),
            Some(id) => id,
            None => loop {
                let id = AccountId::parse(&random_string(b"0123456789", 12))
                    .map_err(|e| corrupt("account id", e))?;
                if !self.account_exists(&id) {
                    break id;
                }
            },
        };
        let info = AccountInfo {
            account_id: id.clone(),
            created: now,
        };
        let key = format!("{ACCOUNTS}{id}");
        let value = serde_json::to_vec(&info).map_err(|e| corrupt(&key, e))?;
        match self
            .store
            .put(&key, Bytes::from(value), Precondition::Absent)
            .await
        {
            Err(StoreError::Conflict { .. }) => return Err(KeysError::AccountExists(id)),
            r => r?,
        };
        self.accounts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, info.clone());
        Ok(info)
    }

    /// Every account, the admin key's first.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut out = vec![self.admin.account.clone()];
        out.extend(
            self.accounts
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .filter(|a| **a != self.admin.account)
                .cloned(),
        );
        out
    }

    /// Creates a key for `account`; the only time its secret is returned.
    pub async fn create_key(
        &self,
        account: AccountId,
        now: String,
    ) -> Result<(KeyInfo, String), KeysError> {
        if !self.account_exists(&account) {
            return Err(KeysError::NoAccount(account));
        }
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let record = KeyRecord {
            access_key_id: format!("STK{}", random_string(UPPER, 17)),
            account_id: account,
            secret_access_key: random_string(SECRET, 40),
            created: now,
        };
        let key = format!("{KEYS}{}", record.access_key_id);
        let value = serde_json::to_vec(&record).map_err(|e| corrupt(&key, e))?;
        self.store
            .put(&key, Bytes::from(value), Precondition::Absent)
            .await?;
        let info = info(&record);
        let secret = record.secret_access_key.clone();
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.access_key_id.clone(), record);
        Ok((info, secret))
    }

    /// The stored keys (not the admin key), of one account or all, by id.
    pub fn list_keys(&self, account: Option<&AccountId>) -> Vec<KeyInfo> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<KeyInfo> = keys
            .values()
            .filter(|k| account.is_none_or(|a| *a == k.account_id))
            .map(info)
            .collect();
        out.sort_by(|a, b| a.access_key_id.cmp(&b.access_key_id));
        out
    }

    /// Revokes a stored key: requests signed with it are refused from now on.
    pub async fn revoke(&self, access_key_id: &str) -> Result<(), KeysError> {
        let key = format!("{KEYS}{access_key_id}");
        if !self.store.delete(&key, Precondition::None).await? {
            return Err(KeysError::NoKey(access_key_id.to_owned()));
        }
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(access_key_id);
        Ok(())
    }
}

fn info(k: &KeyRecord) -> KeyInfo {
    KeyInfo {
        access_key_id: k.access_key_id.clone(),
        account_id: k.account_id.clone(),
        created: k.created.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> AdminKey {
        AdminKey {
            credentials: Credentials {
                access_key_id: "ADMIN".into(),
                secret: "admin-secret".into(),
            },
            account: AccountId::default_local(),
        }
    }

    async fn keys(dir: &tempfile::TempDir) -> (Arc<dyn MetaStore>, Keys) {
        let meta: Arc<dyn MetaStore> = Arc::new(
            stratus_store_embedded::EmbeddedMetaStore::open(dir.path().join("meta.redb"))
                .expect("meta"),
        );
        let k = Keys::load(Arc::clone(&meta), admin()).await.expect("load");
        (meta, k)
    }

    #[tokio::test]
    async fn keys_belong_to_accounts_survive_a_reload_and_can_be_revoked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (meta, k) = keys(&dir).await;
        assert!(k.lookup("ADMIN").expect("admin").admin);
        let acct = k.create_account(None, "t".into()).await.expect("account");
        let (info, secret) = k
            .create_key(acct.account_id.clone(), "t".into())
            .await
            .expect("key");
        assert_eq!(info.access_key_id.len(), 20);
        assert_eq!(secret.len(), 40);
        let owner = k.lookup(&info.access_key_id).expect("known");
        assert_eq!(owner.account, acct.account_id);
        assert!(!owner.admin);
        assert_eq!(owner.secret, secret);

        let again = Keys::load(meta, admin()).await.expect("reload");
        assert_eq!(again.accounts().len(), 2);
        assert_eq!(again.list_keys(Some(&acct.account_id)).len(), 1);
        again.revoke(&info.access_key_id).await.expect("revoke");
        assert!(again.lookup(&info.access_key_id).is_none());
        assert!(matches!(
            again.revoke(&info.access_key_id).await,
            Err(KeysError::NoKey(_))
        ));
    }

    #[tokio::test]
    async fn keys_need_an_account_and_accounts_are_unique() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_meta, k) = keys(&dir).await;
        let other = AccountId::parse("123456789012").expect("id");
        assert!(matches!(
            k.create_key(other.clone(), "t".into()).await,
            Err(KeysError::NoAccount(_))
        ));
        k.create_account(Some(other.clone()), "t".into())
            .await
            .expect("created");
        assert!(matches!(
            k.create_account(Some(other), "t".into()).await,
            Err(KeysError::AccountExists(_))
        ));
        assert!(matches!(
            k.create_account(Some(AccountId::default_local()), "t".into())
                .await,
            Err(KeysError::AccountExists(_))
        ));
        // The admin key's account needs no record to have keys.
        k.create_key(AccountId::default_local(), "t".into())
            .await
            .expect("key for the default account");
    }
}
