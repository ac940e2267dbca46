//! `/v1/info`: who this origin is.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use shoal_core::origin_client::OriginInfo;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/info", get(info))
}

/// `member` is empty until this origin has found itself in the member list.
async fn info(State(st): State<AppState>) -> axum::Json<OriginInfo> {
    axum::Json(OriginInfo {
        member: st.cluster.me().unwrap_or_default(),
        peer_id: st.cluster.peer_id(),
        peer_port: st.peer_port,
    })
}
