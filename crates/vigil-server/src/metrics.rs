// TEMP STUB
pub(crate) fn install(_l: std::net::SocketAddr) -> Result<(), crate::ServerError> {
    Ok(())
}
pub(crate) fn batch_stored(_t: &str, _r: u64, _d: u64, _s: f64) {}
pub(crate) fn refused(_r: &'static str) {}
