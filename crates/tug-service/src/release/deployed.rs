//! The image an environment's files name, read from the service's target at the branch tip:
//! `status` shows it when deploys (not releases) set it.

use serde_json::Value;
use tug_release::{EditKind, Target};

use super::index::{mirror_of, tip};
use super::{Ctx, Place, internal};
use crate::error::ServiceError;

/// The image a target's file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployedImage {
    pub image: String,
    pub tag: String,
    /// The file it was read from.
    pub file: String,
}

/// Reads the image at `target` on the tip of `place` (as last fetched). `image` is the service's
/// image repository when known (from its newest artifact); `None` when the files name none.
pub(crate) async fn deployed_image(
    ctx: &Ctx,
    place: &Place,
    target: &Target,
    image: Option<String>,
) -> Result<Option<DeployedImage>, ServiceError> {
    let mirror = mirror_of(ctx, &place.repository).await?;
    let Some(commit) = tip(mirror.clone(), &place.branch, false).await? else {
        return Ok(None);
    };
    let target = target.clone();
    tokio::task::spawn_blocking(move || {
        let Ok(tree) = mirror.tree_at(commit) else {
            return None;
        };
        let read = |path: &str| -> Option<String> {
            tug_git::FileSource::read_file(&tree, path)
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
        };
        let dir = target.path.trim_end_matches('/');
        match &target.edit {
            EditKind::Kustomize { image: entry } => {
                let (file, text) = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
                    .iter()
                    .map(|name| format!("{dir}/{name}"))
                    .find_map(|file| read(&file).map(|text| (file, text)))?;
                let name = entry.clone().or(image);
                kustomize_image(&text, name.as_deref()).map(|(image, tag)| DeployedImage {
                    image,
                    tag,
                    file,
                })
            }
            EditKind::Helm { key } => {
                let file = format!("{dir}/values.yaml");
                helm_image(&read(&file)?, key).map(|(image, tag)| DeployedImage {
                    image,
                    tag,
                    file,
                })
            }
            EditKind::Yq { path } => {
                let text = read(dir)?;
                let value: Value = serde_saphyr::from_str(&text).ok()?;
                let keys: Vec<&str> = path.trim_start_matches('.').split('.').collect();
                let reference = scalar(at(&value, &keys)?)?;
                let (image, tag) = split_reference(&reference)?;
                Some(DeployedImage {
                    image,
                    tag,
                    file: dir.to_owned(),
                })
            }
            EditKind::Manifest { .. } => {
                let image = image?;
                let entries = tug_git::FileSource::list_dir(&tree, dir).ok()?;
                entries
                    .iter()
                    .filter(|e| e.name.ends_with(".yaml") || e.name.ends_with(".yml"))
                    .find_map(|e| {
                        let file = format!("{dir}/{}", e.name);
                        let tag = manifest_tag(&read(&file)?, &image)?;
                        Some(DeployedImage {
                            image: image.clone(),
                            tag,
                            file,
                        })
                    })
            }
            // Status shows images; a chart target's version is in the release history.
            EditKind::Copy | EditKind::Chart { .. } => None,
        }
    })
    .await
    .map_err(|e| internal(format!("git task failed: {e}")))
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn at<'v>(value: &'v Value, keys: &[&str]) -> Option<&'v Value> {
    keys.iter().try_fold(value, |v, k| v.get(k))
}

/// `repo:tag` (a registry port is part of the repository); the tag without a digest.
fn split_reference(reference: &str) -> Option<(String, String)> {
    let reference = reference.split('@').next()?;
    let (image, tag) = reference.rsplit_once(':')?;
    if tag.contains('/') {
        return None;
    }
    Some((image.to_owned(), tag.to_owned()))
}

/// The `images:` entry named `name` (or the only entry): its image and tag.
fn kustomize_image(text: &str, name: Option<&str>) -> Option<(String, String)> {
    let value: Value = serde_saphyr::from_str(text).ok()?;
    let images = value.get("images")?.as_array()?;
    let entry = match name {
        Some(name) => images
            .iter()
            .find(|i| i.get("name").and_then(Value::as_str) == Some(name))?,
        None if images.len() == 1 => &images[0],
        None => return None,
    };
    let image = entry
        .get("newName")
        .and_then(scalar)
        .or_else(|| entry.get("name").and_then(scalar))?;
    let tag = entry.get("newTag").and_then(scalar)?;
    Some((image, tag))
}

/// The image map (or `repo:tag` string) at the dotted `key`.
fn helm_image(text: &str, key: &str) -> Option<(String, String)> {
    let value: Value = serde_saphyr::from_str(text).ok()?;
    let keys: Vec<&str> = key.trim_start_matches('.').split('.').collect();
    let node = at(&value, &keys)?;
    if let Some(reference) = node.as_str() {
        return split_reference(reference);
    }
    let repository = node.get("repository").and_then(scalar)?;
    let image = match node.get("registry").and_then(scalar) {
        Some(registry) => format!("{registry}/{repository}"),
        None => repository,
    };
    Some((image, node.get("tag").and_then(scalar)?))
}

/// The tag of the first container `image:` line whose repository is `image`.
fn manifest_tag(text: &str, image: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim_start().trim_start_matches("- ").trim_start();
        let value = line.strip_prefix("image:")?;
        let value = value.split(" #").next()?.trim().trim_matches(['"', '\'']);
        let (repository, tag) = split_reference(value)?;
        (repository == image).then_some(tag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_layout_names_its_image() {
        let kustomization = "images:\n  - name: app\n    newName: r.example.com/app\n    newTag: 1.2.0\n  - name: redis\n    newTag: \"7\"\n";
        assert_eq!(
            kustomize_image(kustomization, Some("app")),
            Some(("r.example.com/app".to_owned(), "1.2.0".to_owned()))
        );
        assert_eq!(kustomize_image(kustomization, None), None);
        assert_eq!(
            helm_image(
                "image:\n  registry: r.example.com\n  repository: team/w\n  tag: \"2.0\"\n",
                "image"
            ),
            Some(("r.example.com/team/w".to_owned(), "2.0".to_owned()))
        );
        assert_eq!(
            helm_image("app:\n  image: r.example.com:5000/w:3\n", "app.image"),
            Some(("r.example.com:5000/w".to_owned(), "3".to_owned()))
        );
        assert_eq!(
            manifest_tag(
                "spec:\n  containers:\n    - image: \"r.example.com/w:4.1\"  # ci\n",
                "r.example.com/w"
            ),
            Some("4.1".to_owned())
        );
    }
}
