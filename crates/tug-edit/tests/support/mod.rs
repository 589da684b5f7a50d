//! Reading the data-driven edit cases under `tests/cases/<name>/`.
// Test fixture loading: a malformed case directory must abort the run loudly. Each test binary
// uses a different subset of the fields.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use tug_edit::{Edit, ImageSpec, ValueType};

/// One case directory: an input file, an `edit` line and the expected bytes or error.
pub(crate) struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub input_name: String,
    pub input: Vec<u8>,
    pub edit_line: String,
    pub edit: Edit,
}

pub(crate) fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("cases")
}

pub(crate) fn load_cases() -> Vec<Case> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(cases_dir())
        .expect("tests/cases exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.into_iter().map(|dir| load_case(&dir)).collect()
}

fn load_case(dir: &Path) -> Case {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut inputs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let file = p.file_name().unwrap().to_string_lossy();
            file != "expected.yaml"
                && file != "expected.err"
                && file != "expected.created"
                && file != "edit"
        })
        .collect();
    assert_eq!(
        inputs.len(),
        1,
        "case {name}: exactly one input file besides edit/expected.*, found {inputs:?}"
    );
    let input_path = inputs.remove(0);
    let edit_line = fs::read_to_string(dir.join("edit"))
        .unwrap_or_else(|e| panic!("case {name}: edit: {e}"))
        .trim_end_matches(['\n', '\r'])
        .to_owned();
    let edit = parse_edit(&edit_line).unwrap_or_else(|e| panic!("case {name}: edit line: {e}"));
    Case {
        input_name: input_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
        input: fs::read(&input_path).unwrap(),
        name,
        dir: dir.to_owned(),
        edit_line,
        edit,
    }
}

/// Splits an edit line into words; a word starting with `"` is a JSON string (for values with
/// spaces or line breaks).
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('"') {
            let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<String>();
            let word = stream
                .next()
                .ok_or("unterminated string")?
                .map_err(|e| e.to_string())?;
            rest = rest[stream.byte_offset()..].trim_start();
            out.push(word);
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            out.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    Ok(out)
}

pub(crate) fn parse_edit(line: &str) -> Result<Edit, String> {
    let words = words(line)?;
    // Malformed specs are still edits: the engine must refuse them itself.
    let raw_spec = |s: &String| -> Result<ImageSpec, String> {
        Ok(ImageSpec::parse(s).unwrap_or_else(|_| naive_spec(s)))
    };
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["kustomize-image", s] => Ok(Edit::KustomizeImage(raw_spec(&s.to_string())?)),
        ["manifest-image", s] => Ok(Edit::ManifestImage(raw_spec(&s.to_string())?)),
        ["container-image", container, s] => Ok(Edit::ContainerImage {
            container: container.to_string(),
            image: raw_spec(&s.to_string())?,
        }),
        ["set", path, value] => Ok(Edit::Set {
            path: path.to_string(),
            value: value.to_string(),
            value_type: ValueType::Auto,
        }),
        ["set", path, value, "--type", ty] => Ok(Edit::Set {
            path: path.to_string(),
            value: value.to_string(),
            value_type: ty.parse()?,
        }),
        ["helm-image", path, s] => Ok(Edit::HelmImage {
            path: path.to_string(),
            image: raw_spec(&s.to_string())?,
        }),
        ["chart", name, version] => Ok(Edit::ChartVersion {
            name: name.to_string(),
            repository: None,
            version: version.to_string(),
        }),
        ["chart", name, version, "--repository", repository] => Ok(Edit::ChartVersion {
            name: name.to_string(),
            repository: Some(repository.to_string()),
            version: version.to_string(),
        }),
        ["redeploy", key, value] => Ok(Edit::Redeploy {
            key: key.to_string(),
            value: value.to_string(),
            workload: None,
        }),
        ["redeploy", key, value, workload] => Ok(Edit::Redeploy {
            key: key.to_string(),
            value: value.to_string(),
            workload: Some(workload.to_string()),
        }),
        _ => Err(format!("unknown edit {line:?}")),
    }
}

/// Splits a spec without validating it, so that the engine's own validation is what refuses it.
fn naive_spec(s: &str) -> ImageSpec {
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d.to_owned())),
        None => (s, None),
    };
    let (name, new) = match rest.split_once('=') {
        Some((n, new)) => (n, Some(new)),
        None => (rest, None),
    };
    let split = |x: &str| -> (String, Option<String>) {
        let slash = x.rfind('/').map_or(0, |i| i + 1);
        match x[slash..].rfind(':') {
            Some(i) => (
                x[..slash + i].to_owned(),
                Some(x[slash + i + 1..].to_owned()),
            ),
            None => (x.to_owned(), None),
        }
    };
    match new {
        Some(new) => {
            let (new_name, tag) = split(new);
            ImageSpec {
                name: name.to_owned(),
                new_name: Some(new_name),
                new_tag: tag,
                digest,
            }
        }
        None => {
            let (name, tag) = split(name);
            ImageSpec {
                name,
                new_name: None,
                new_tag: tag,
                digest,
            }
        }
    }
}
