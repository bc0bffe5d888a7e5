// TEMP STUB
pub(crate) fn reflection() -> Result<
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
    crate::ServerError,
> {
    Ok(tonic_health::server::health_reporter().1)
}
