// TEMP STUB
#[allow(
    dead_code,
    reason = "a stub until the ops branch lands; serve() adds reflection then"
)]
pub(crate) fn reflection() -> Result<
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    crate::ServerError,
> {
    Ok(tonic_health::server::health_reporter().1)
}
