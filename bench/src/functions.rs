//! The functions the template declares, and how the bench starts one.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A function of `template.yaml`: its logical id, the binary `rust-cargolambda` builds, and
/// its memory size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSpec {
    pub logical_id: String,
    pub binary: String,
    pub memory_mb: u32,
}

/// Every `AWS::Serverless::Function` with `BuildMethod: rust-cargolambda`, in template order.
pub fn from_template(text: &str) -> Result<Vec<FunctionSpec>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let default_memory = doc["Globals"]["Function"]["MemorySize"].as_u64().unwrap_or(128) as u32;
    let resources = doc["Resources"].as_mapping().ok_or("template has no Resources")?;
    let mut out = Vec::new();
    for (id, res) in resources {
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        if res["Metadata"]["BuildMethod"].as_str() != Some("rust-cargolambda") {
            continue;
        }
        let binary = res["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .ok_or_else(|| format!("{id:?} has no BuildProperties.Binary"))?;
        out.push(FunctionSpec {
            logical_id: id.as_str().unwrap_or_default().to_owned(),
            binary: binary.to_owned(),
            memory_mb: res["Properties"]["MemorySize"]
                .as_u64()
                .map(|m| m as u32)
                .unwrap_or(default_memory),
        });
    }
    Ok(out)
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Starts `binary` with exactly `env` (nothing inherited), output to `log` (or discarded).
    /// No `pre_exec` hook, so the spawn takes the fast path (no fork of this big process).
    pub fn spawn(binary: &Path, env: &[(String, String)], log: Option<&Path>) -> std::io::Result<Proc> {
        let (out, err) = match log {
            Some(path) => {
                let f = std::fs::File::create(path)?;
                (Stdio::from(f.try_clone()?), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = Command::new(binary)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()?;
        Ok(Proc { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `target/release/<binary>`.
pub fn release_binary(root: &Path, binary: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("release").join(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_of_the_template_is_found() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
        let functions = from_template(&text).unwrap();
        let binaries: Vec<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
        for expected in ["api", "webhook", "media", "sender"] {
            assert!(binaries.contains(&expected), "{binaries:?}");
        }
        assert!(functions.iter().all(|f| f.memory_mb >= 128));
    }
}
