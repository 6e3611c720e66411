//! A row cursor with one row of look-ahead, for merging sorted streams.

use clickhouse::query::RowCursor;
use clickhouse::{RowOwned, RowRead};

use crate::clickhouse::{StoreError, classify};

/// A cursor over rows sorted by a key, which yields them group by group.
pub struct Peekable<T: RowOwned + RowRead> {
    cursor: RowCursor<T>,
    head: Option<T>,
    done: bool,
}

impl<T: RowOwned + RowRead> Peekable<T> {
    /// Streams the rows of `sql` (which must order them by the key).
    pub fn new(client: &clickhouse::Client, sql: &str) -> Result<Self, StoreError> {
        let cursor = client.query(sql).fetch::<T>().map_err(classify)?;
        Ok(Peekable {
            cursor,
            head: None,
            done: false,
        })
    }

    /// Returns the next row without taking it.
    pub async fn peek(&mut self) -> Result<Option<&T>, StoreError> {
        if self.head.is_none() && !self.done {
            self.head = self.cursor.next().await.map_err(classify)?;
            self.done = self.head.is_none();
        }
        Ok(self.head.as_ref())
    }

    /// Takes every next row whose key equals `key`.
    pub async fn take_while<K: PartialEq>(
        &mut self,
        key: &K,
        key_of: impl Fn(&T) -> K,
    ) -> Result<Vec<T>, StoreError> {
        let mut group = Vec::new();
        while let Some(row) = self.peek().await? {
            if key_of(row) != *key {
                break;
            }
            group.extend(self.head.take());
        }
        Ok(group)
    }

    /// Takes the next row.
    pub async fn next(&mut self) -> Result<Option<T>, StoreError> {
        self.peek().await?;
        Ok(self.head.take())
    }
}
