//! Delivery of what the engine granted: manifest files uploaded to Twitch
//! (`upload`, through `twitch`), each under the id it was created with, so a
//! retry or a restart can only ever re-send the same users under the same id.

pub mod twitch;
pub mod upload;

pub use twitch::{TwitchClient, UploadError};
pub use upload::Uploader;
