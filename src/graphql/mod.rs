//! Helpers every feature's resolvers use — context access, guards — and the per-operation
//! extension that enforces limits and shapes errors. (Schema assembly lives in `crate::schema`.)

pub mod cache_policy;
pub mod context;
pub mod document;
pub mod extension;
pub mod guards;
pub mod paging;
pub mod slow_resolvers;
pub mod socket;
pub mod tenancy;

pub use cache_policy::CachePolicy;
pub use context::{CacheTags, ContextExt, OperationData};
pub use extension::{Budget, Cost, RequestContext, RequestPhase};
pub use guards::RequirePermission;
pub use paging::limit_offset;
pub use socket::SocketSession;
pub use tenancy::tenant;
