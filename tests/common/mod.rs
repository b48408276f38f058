pub mod kafka;
pub mod redis;
