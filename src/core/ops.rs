//! What the control plane may ask of the process. The runtime implements
//! it; the admin API calls it.

/// Operations the admin API may ask for.
pub trait Ops: Send + Sync {
    /// Re-reads the configuration (as SIGHUP does); the error says why not.
    fn reload(&self) -> Result<(), String>;
}
