//! Request-scoped batch loaders, so a page of users costs a fixed number of queries.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use async_graphql::dataloader::{DataLoader, Loader};
use sea_orm::{
    ColumnTrait as _, DatabaseConnection, EntityTrait as _, QueryFilter as _, QueryOrder as _,
};
use uuid::Uuid;

use crate::entities::{roles, user_roles, users};

/// Loaders of one request (or one WebSocket operation), made when a resolver first asks for
/// them: most operations batch-load nothing, and then nothing is made (three loaders and their
/// connection handles, per operation, before).
pub struct Loaders {
    db: DatabaseConnection,
    made: OnceLock<Batches>,
}

/// The loaders themselves, keyed by user id and scoped to one operation: what one loaded
/// serves no other operation.
pub struct Batches {
    pub roles: DataLoader<RolesByUser>,
    pub permissions: DataLoader<PermissionsByUser>,
    pub users: DataLoader<UsersById>,
}

/// Adds this feature's loaders to an operation's request (the registry calls it).
pub fn attach(
    state: &crate::state::AppState,
    request: async_graphql::Request,
) -> async_graphql::Request {
    request.data(Loaders::new(&state.db))
}

impl Loaders {
    pub fn new(db: &DatabaseConnection) -> Self {
        Self {
            db: db.clone(),
            made: OnceLock::new(),
        }
    }

    /// The operation's loaders, made on first use (concurrent resolvers share the one made).
    pub fn get(&self) -> &Batches {
        self.made.get_or_init(|| {
            let db = || self.db.clone();
            Batches {
                roles: DataLoader::new(RolesByUser { db: db() }, tokio::spawn),
                permissions: DataLoader::new(PermissionsByUser { db: db() }, tokio::spawn),
                users: DataLoader::new(UsersById { db: db() }, tokio::spawn),
            }
        })
    }
}

pub struct RolesByUser {
    db: DatabaseConnection,
}

impl Loader<Uuid> for RolesByUser {
    type Value = Vec<roles::Model>;
    type Error = Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let rows = user_roles::Entity::find()
            .filter(user_roles::Column::UserId.is_in(keys.iter().copied()))
            .find_also_related(roles::Entity)
            .order_by_asc(user_roles::Column::CreatedAt)
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        let mut out: HashMap<Uuid, Vec<roles::Model>> = keys.iter().map(|k| (*k, vec![])).collect();
        for (link, role) in rows {
            if let Some(role) = role {
                out.entry(link.user_id).or_default().push(role);
            }
        }
        Ok(out)
    }
}

pub struct PermissionsByUser {
    db: DatabaseConnection,
}

impl Loader<Uuid> for PermissionsByUser {
    type Value = BTreeSet<String>;
    type Error = Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        crate::identity::accounts::permissions_of(&self.db, keys)
            .await
            .map_err(|e| match e {
                crate::error::AppError::Database(db) => Arc::new(db),
                other => Arc::new(sea_orm::DbErr::Custom(other.to_string())),
            })
    }
}

pub struct UsersById {
    db: DatabaseConnection,
}

impl Loader<Uuid> for UsersById {
    type Value = users::Model;
    type Error = Arc<sea_orm::DbErr>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        let found = users::Entity::find()
            .filter(users::Column::Id.is_in(keys.iter().copied()))
            .all(&self.db)
            .await
            .map_err(Arc::new)?;
        Ok(found.into_iter().map(|u| (u.id, u)).collect())
    }
}
