use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotOurs(String),
    #[error("{0}")]
    Damaged(String),
    #[error("backend: {0}")]
    Backend(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

macro_rules! backend_err {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Error::Backend(e.to_string()) }
        }
    )*};
}
backend_err!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::DatabaseError,
    redb::CompactionError
);

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        Status::internal(e.to_string())
    }
}
