//! The records: every instance's metadata, owned in memory and written through to disk. The
//! engine holding the data dir's lock is its only writer, so after one load at the first read
//! a list is a walk over memory, not a `stat` (or a parse) per instance. A hand edit of a
//! metadata file is seen by the next engine.
//!
//! Invariants: memory changes only after the disk write succeeded, so what is listed is what
//! a restarted engine would load; the caller of [`Records::save`], [`Records::create`] and
//! [`Records::remove`] holds the instance's lock (or owns a create that no one can see yet).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use hypedeck_store::{InstanceRecord, Paths};

use crate::EngineError;
use crate::render::Rendered;

type Map = HashMap<String, Arc<Entry>>;

/// One instance's record as last written, and its wire form as last rendered from it. A save
/// replaces the whole entry, so a rendering never outlives the record it came from.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) record: InstanceRecord,
    /// Filled by [`crate::Engine::list_json`]; valid while the observed state and the vault
    /// generation it was made with still hold.
    pub(crate) rendered: Mutex<Option<Rendered>>,
}

impl Entry {
    fn new(record: InstanceRecord) -> Arc<Entry> {
        Arc::new(Entry {
            record,
            rendered: Mutex::new(None),
        })
    }
}

/// Every instance's record, by id.
#[derive(Debug)]
pub(crate) struct Records {
    paths: Paths,
    /// `None` until the first read loads the data dir.
    map: RwLock<Option<Map>>,
}

impl Records {
    pub(crate) fn new(paths: Paths) -> Records {
        Records {
            paths,
            map: RwLock::new(None),
        }
    }

    /// The loaded map, loading it on first use. A damaged metadata file is skipped (logged):
    /// it must not hide every other instance.
    fn loaded(&self) -> Result<RwLockReadGuard<'_, Option<Map>>, EngineError> {
        {
            let map = self.map.read().unwrap_or_else(|p| p.into_inner());
            if map.is_some() {
                return Ok(map);
            }
        }
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if map.is_none() {
            let mut loaded = Map::new();
            for record in InstanceRecord::load_all(&self.paths)? {
                match record {
                    Ok(r) => {
                        loaded.insert(r.id.clone(), Entry::new(r));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping unreadable instance metadata")
                    }
                }
            }
            *map = Some(loaded);
        }
        drop(map);
        Ok(self.map.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Every record, oldest first.
    pub(crate) fn all(&self) -> Result<Vec<InstanceRecord>, EngineError> {
        Ok(self
            .entries()?
            .into_iter()
            .map(|e| e.record.clone())
            .collect())
    }

    /// Every entry, oldest first: shared, not copied (a list reads a thousand of them).
    pub(crate) fn entries(&self) -> Result<Vec<Arc<Entry>>, EngineError> {
        let map = self.loaded()?;
        let mut out: Vec<Arc<Entry>> = map.iter().flat_map(|m| m.values().cloned()).collect();
        out.sort_by(|a, b| {
            (a.record.created_at, &a.record.id).cmp(&(b.record.created_at, &b.record.id))
        });
        Ok(out)
    }

    /// The record of instance `id`.
    pub(crate) fn get(&self, id: &str) -> Result<Option<InstanceRecord>, EngineError> {
        Ok(self
            .loaded()?
            .as_ref()
            .and_then(|m| m.get(id).map(|e| e.record.clone())))
    }

    fn put(&self, record: &InstanceRecord) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = map.as_mut() {
            map.insert(record.id.clone(), Entry::new(record.clone()));
        }
    }

    /// Writes a new instance's directory and metadata, then lists it.
    pub(crate) fn create(&self, record: &InstanceRecord) -> Result<(), EngineError> {
        drop(self.loaded()?);
        record.create(&self.paths)?;
        self.put(record);
        Ok(())
    }

    /// Writes an existing instance's metadata, then keeps it.
    pub(crate) fn save(&self, record: &InstanceRecord) -> Result<(), EngineError> {
        drop(self.loaded()?);
        record.save(&self.paths)?;
        self.put(record);
        Ok(())
    }

    /// Forgets an instance whose directory is gone (or is going).
    pub(crate) fn remove(&self, id: &str) {
        let mut map = self.map.write().unwrap_or_else(|p| p.into_inner());
        if let Some(map) = map.as_mut() {
            map.remove(id);
        }
    }
}
