//! `httpraft tokens`: the API's bearer tokens. The file keeps each token's name, role and
//! SHA-256 only; the token itself is printed once, when it is made.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use raft_http::{new_token, token_hash, Role, TokenEntry, TokenFile};

/// What `httpraft tokens` does.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token for <name> with a role, add its hash to the file, print the token.
    Add {
        /// Who will hold it (unique in the file).
        name: String,
        /// read, write or admin.
        #[arg(long)]
        role: Role,
        /// The token file [default: tokens.json].
        #[arg(long, default_value = "tokens.json")]
        file: PathBuf,
    },
    /// List the tokens' names and roles.
    List {
        /// The token file [default: tokens.json].
        #[arg(long, default_value = "tokens.json")]
        file: PathBuf,
    },
    /// Remove <name>'s token.
    Remove {
        /// Whose token.
        name: String,
        /// The token file [default: tokens.json].
        #[arg(long, default_value = "tokens.json")]
        file: PathBuf,
    },
}

fn load_or_empty(path: &Path) -> Result<TokenFile, String> {
    if path.exists() {
        TokenFile::load(path)
    } else {
        Ok(TokenFile::default())
    }
}

/// Writes the file whole (a new file renamed over the old one), readable by its owner
/// only.
fn save(path: &Path, file: &TokenFile) -> Result<(), String> {
    let text = serde_json::to_string_pretty(file).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}

/// Runs one `httpraft tokens` command.
pub fn run(cmd: TokensCommand) -> Result<(), String> {
    match cmd {
        TokensCommand::Add { name, role, file } => {
            let mut f = load_or_empty(&file)?;
            if f.tokens.iter().any(|t| t.name == name) {
                return Err(format!(
                    "{} already has a token named {name:?}; remove it first to replace it",
                    file.display()
                ));
            }
            let token = new_token()?;
            f.tokens.push(TokenEntry {
                name: name.clone(),
                role,
                sha256: token_hash(&token),
            });
            save(&file, &f)?;
            println!("{token}");
            eprintln!(
                "added {name:?} ({}) to {}; the token above is not stored anywhere: give it to its holder now. Send SIGHUP to running nodes to load the file.",
                role.name(),
                file.display()
            );
        }
        TokensCommand::List { file } => {
            for t in TokenFile::load(&file)?.tokens {
                println!("{}\t{}", t.name, t.role.name());
            }
        }
        TokensCommand::Remove { name, file } => {
            let mut f = TokenFile::load(&file)?;
            let before = f.tokens.len();
            f.tokens.retain(|t| t.name != name);
            if f.tokens.len() == before {
                return Err(format!("{} has no token named {name:?}", file.display()));
            }
            save(&file, &f)?;
            eprintln!(
                "removed {name:?} from {}; send SIGHUP to running nodes to stop accepting it",
                file.display()
            );
        }
    }
    Ok(())
}
