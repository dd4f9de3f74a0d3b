//! TEMPORARY STUB (lead): replaced by the real webhook notifier.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("stub")]
    Stub,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Requested,
    Resolved,
}
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: NoticeKind,
    pub approval: crate::types::Approval,
    pub admin_url: Option<String>,
}
#[derive(Debug, Clone)]
pub struct Delivery {
    pub approval: String,
    pub kind: NoticeKind,
    pub endpoint: String,
    pub attempts: u32,
    pub result: Result<u16, String>,
}
pub struct Notifier;
impl Notifier {
    pub fn start(
        _config: &portcullis_config::Approvals,
    ) -> Result<Option<(Notifier, tokio::sync::mpsc::Receiver<Delivery>)>, NotifyError> {
        Ok(None)
    }
    pub fn send(&self, _notice: Notice) {}
}
