//! The client's saved login: `$XDG_CONFIG_HOME/zoo/config.toml` (mode 0600).
//! `ZOO_URL` and `ZOO_API_KEY` override it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Saved {
    pub url: Option<String>,
    pub key: Option<String>,
}

/// Where the login is saved (`ZOO_CONFIG` overrides the path).
pub fn path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ZOO_CONFIG") {
        return Some(PathBuf::from(p));
    }
    dirs::config_dir().map(|d| d.join("zoo").join("config.toml"))
}

pub fn load() -> Saved {
    path().and_then(|p| std::fs::read_to_string(p).ok()).and_then(|s| toml::from_str(&s).ok()).unwrap_or_default()
}

pub fn save(saved: &Saved) -> std::io::Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = path().ok_or_else(|| std::io::Error::other("no config directory (set ZOO_CONFIG)"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let text = toml::to_string(saved).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path)?;
    f.write_all(text.as_bytes())?;
    Ok(path)
}
