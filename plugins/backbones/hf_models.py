"""``hf/<repo id>``: Hugging Face transformers image backbones through ``AutoModel``.

Vision-language repositories (CLIP, SigLIP, BLIP...) keep only their image tower. The
output layout is probed once at load with a forward pass: ViT-style models give token
kinds (``cls`` when there is a class token, patch kinds when the patch grid is known),
CNN-style models (4-D ``last_hidden_state``) give ``gap`` and ``spatial_map``; ``pooled``
is the model's own ``pooler_output``. Tokens are the model's final-normalised last layer:
``last_hidden_state`` where transformers normalises it, the final norm applied where it
only normalises the pooled output (CLIP), so ``cls`` means the same across families.

Preprocessing comes from the repository's ``preprocessor_config.json`` (mean, std,
resample, crop or resize size); ``hf/<repo>@448`` overrides the size. Weights: the hub
(``from_pretrained``), or ``weights`` = a local folder in the hub snapshot layout
(``config.json``, ``model.safetensors``, ``preprocessor_config.json``). Resolving a name
never touches the network; metadata are read from the local hub cache when present.
"""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from medfm.backbones import (
    Backbone,
    BackboneFamily,
    BackboneSpec,
    Preprocessing,
    UserError,
    attention_linear_suffixes,
    check_options,
    common_options,
    guess_objective,
    hf_cached_sha,
    hookimpl,
    longest_block_list,
    offline_error,
    sha256_file_memo,
    short_reason,
)
from medfm.datasets import sha256_json

# torch and transformers are imported inside the functions that build or run a model: listing
# the registry imports this module and must not import them (their import takes seconds).
if TYPE_CHECKING:
    import torch
    from torch import nn

CITATION = "Wolf, T. et al. Transformers: State-of-the-Art Natural Language Processing. EMNLP 2020 (demos)"
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL resample codes in preprocessor configs
_NORM_NAMES = ("post_layernorm", "layernorm", "final_layernorm", "norm")


# ------------------------------------------------------------------ preprocessing
def _size_of(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        for key in ("height", "shortest_edge", "width"):
            if isinstance(value.get(key), int):
                return value[key]
    return None


def preprocessing_from_hf(
    cfg: dict[str, Any] | None, fallback: Preprocessing, size: int | None = None
) -> Preprocessing:
    """A ``preprocessor_config.json`` to medfm's preprocessing; ``size`` wins when given."""
    if not cfg:
        return fallback if size is None else fallback.with_options(size=size)
    native = _size_of(cfg.get("crop_size")) if cfg.get("do_center_crop") else None
    native = native or _size_of(cfg.get("size")) or fallback.size
    mean, std = cfg.get("image_mean", fallback.mean), cfg.get("image_std", fallback.std)
    r, g, b = (float(v) for v in mean)
    sr, sg, sb = (float(v) for v in std)
    resample = cfg.get("resample")
    return Preprocessing(
        size=size or native,
        mean=(r, g, b),
        std=(sr, sg, sb),
        interpolation=_RESAMPLE.get(resample, fallback.interpolation)
        if isinstance(resample, int)
        else fallback.interpolation,
    )


def _read_json(path: Path | str | None) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text()) if path and Path(path).is_file() else None
    except (OSError, ValueError):
        return None


def _cached_preprocessor(repo: str) -> dict[str, Any] | None:
    """The repo's preprocessor config if the hub cache has it (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo, "preprocessor_config.json")
    except Exception:
        return None
    return _read_json(path) if isinstance(path, str) else None


# ------------------------------------------------------------------ the backbone
def _patch_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    patch = getattr(config, "patch_size", None) or getattr(getattr(config, "vision_config", None), "patch_size", None)
    if isinstance(patch, (list, tuple)):
        patch = patch[0]
    return int(patch) if patch else None


def _final_norm(model: nn.Module) -> nn.Module | None:
    """The model's last LayerNorm outside its block list (``post_layernorm``, ``layernorm``...)."""
    from torch import nn

    found = {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.LayerNorm) and not any(p.isdigit() for p in name.split("."))
    }
    for wanted in _NORM_NAMES:
        hits = sorted((n for n in found if n.split(".")[-1] == wanted), key=lambda n: n.count("."))
        if hits:
            return found[hits[0]]
    return None


class HFBackbone(Backbone):
    """A transformers image model (or a vision-language model's image tower)."""

    def __init__(
        self,
        model: nn.Module,
        preprocessing: Preprocessing,
        sha: str | None,
        source: str,
        layout: dict[str, Any] | None = None,
    ) -> None:
        self.module = model
        self.preprocessing = preprocessing
        self.weights_sha256, self.weights_source = sha, source
        params = inspect.signature(model.forward).parameters
        self._interpolate = "interpolate_pos_encoding" in params
        self._norm = _final_norm(model)
        self.layout = layout or self._probe()
        self.feature_dims, self.default_kind = self._kinds(self.layout)
        self.attention_projections = attention_linear_suffixes(model)

    def _forward(self, images: torch.Tensor, hidden: bool) -> Any:
        kwargs: dict[str, Any] = {"pixel_values": images, "output_hidden_states": hidden}
        if self._interpolate:  # a no-op at the native size; resamples position embeddings otherwise
            kwargs["interpolate_pos_encoding"] = True
        return self.module(**kwargs)

    def _probe(self) -> dict[str, Any]:
        """One forward pass at the input size: token or map layout, class token, normalisation."""
        import torch

        size = self.preprocessing.size
        param = next(self.module.parameters())
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(param)
        with torch.no_grad():
            out = self._forward(x, hidden=True)
        lhs = out.last_hidden_state
        pooler = getattr(out, "pooler_output", None)
        layout: dict[str, Any] = {"pooled": int(pooler.flatten(1).shape[1]) if pooler is not None else None}
        if lhs.ndim == 4:
            return {**layout, "map": True, "dim": int(lhs.shape[1])}
        patch = _patch_size(self.module)
        grid = (size // patch) ** 2 if patch else None
        prefix = int(lhs.shape[1] - grid) if grid and lhs.shape[1] >= grid else None
        hs = out.hidden_states[-1] if getattr(out, "hidden_states", None) else None
        mode = "raw"
        if self._norm is not None and hs is not None and hs.shape == lhs.shape:
            if torch.allclose(lhs, self._norm(hs), atol=1e-5):
                mode = "normed"
            elif torch.allclose(lhs, hs):
                mode = "prenorm"  # CLIP: the final norm is applied to the pooled token only
        depth = len(out.hidden_states) - 1 if getattr(out, "hidden_states", None) else 0
        return {**layout, "map": False, "dim": int(lhs.shape[2]), "prefix": prefix, "mode": mode, "depth": depth}

    @staticmethod
    def _kinds(layout: dict[str, Any]) -> tuple[dict[str, int], str]:
        d = layout["dim"]
        dims: dict[str, int] = {}
        if layout["map"]:
            dims = {"gap": d, "spatial_map": d}
        elif layout["prefix"] is None:
            dims = {"mean_patch": d}  # unknown grid: the mean over all tokens
        else:
            dims = {"mean_patch": d, "patch_map": d}
            if layout["prefix"] >= 1:
                dims.update({"cls": d, "cls_mean_patch": 2 * d})
                if layout["depth"] >= 4:
                    dims["last4_cls"] = 4 * d
        if layout["pooled"]:
            dims["pooled"] = layout["pooled"]
        default = "gap" if layout["map"] else ("cls" if "cls" in dims else "mean_patch")
        return dims, default

    def blocks(self) -> list[nn.Module]:
        """The longest list of same-type blocks (encoder layers or CNN stages)."""
        return longest_block_list(self.module)

    def _normed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._norm(tokens) if self._norm is not None and self.layout["mode"] != "raw" else tokens

    def features(self, images: torch.Tensor, kinds: Sequence[str]) -> dict[str, torch.Tensor]:
        """One forward pass (with hidden states only when ``last4_cls`` is asked for)."""
        import torch

        out = self._forward(images, hidden="last4_cls" in kinds)
        lhs, layout = out.last_hidden_state, self.layout
        result: dict[str, torch.Tensor] = {}
        if "pooled" in kinds:
            result["pooled"] = out.pooler_output.flatten(1)
        if layout["map"]:
            for kind in kinds:
                if kind in ("gap", "spatial_map"):
                    result[kind] = lhs.mean((2, 3)) if kind == "gap" else lhs
            return result
        tokens = self._norm(lhs) if layout["mode"] == "prenorm" and self._norm is not None else lhs
        prefix = layout["prefix"] or 0
        patches = tokens[:, prefix:]
        for kind in kinds:
            if kind == "cls":
                result[kind] = tokens[:, 0]
            elif kind == "mean_patch":
                result[kind] = patches.mean(1)
            elif kind == "cls_mean_patch":
                result[kind] = torch.cat([tokens[:, 0], patches.mean(1)], dim=-1)
            elif kind == "patch_map":
                patch = _patch_size(self.module)
                if patch is None:
                    raise NotImplementedError(f"{type(self.module).__name__} has no patch size for a patch map")
                h, w = images.shape[-2] // patch, images.shape[-1] // patch
                result[kind] = patches.transpose(1, 2).reshape(patches.shape[0], patches.shape[2], h, w)
            elif kind == "last4_cls":
                result[kind] = torch.cat([self._normed(h)[:, 0] for h in out.hidden_states[-4:]], dim=-1)
        return result


# ------------------------------------------------------------------ loading
def folder_weights_sha(folder: Path) -> str | None:
    """sha256 of the folder's weight file; for sharded checkpoints, of the shards' sha256s."""
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (folder / single).is_file():
            return sha256_file_memo(folder / single)
    shards = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))
    return sha256_json({p.name: sha256_file_memo(p) for p in shards}) if shards else None


def snapshot_folder(weights: str, backbone: str) -> Path:
    """The ``weights`` option as a hub snapshot folder (a file inside one is accepted)."""
    path = Path(weights).expanduser()
    folder = path.parent if path.is_file() else path
    if not (folder / "config.json").is_file():
        raise UserError(
            f"backbone {backbone!r}: weights {path} is not a Hugging Face model folder "
            "(config.json, model.safetensors, preprocessor_config.json); download the repository "
            'with `huggingface-cli download <repo id> --local-dir DIR` and set `weights = "DIR"`'
        )
    return folder


def _image_tower(model: nn.Module) -> nn.Module:
    """The image tower of vision-language models; the model itself otherwise."""
    from torch import nn

    tower = getattr(model, "vision_model", None)
    return tower if isinstance(tower, nn.Module) else model


def load_hf(spec: BackboneSpec, repo: str, options: dict[str, Any]) -> HFBackbone:
    """``AutoModel`` from a local snapshot folder, the hub, or (``pretrained = false``) its config."""
    check_options(spec, options)
    import torch
    from transformers import AutoConfig, AutoModel

    weights, pretrained = options.get("weights"), options.get("pretrained", True)
    prep_cfg: dict[str, Any] | None = None
    sha, source = None, "random initialisation (seeded)"
    try:
        if weights:
            folder = snapshot_folder(weights, spec.name)
            model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
            prep_cfg = _read_json(folder / "preprocessor_config.json")
            sha, source = folder_weights_sha(folder), f"local folder {folder}"
        elif pretrained:
            model = AutoModel.from_pretrained(repo, dtype=torch.float32)
            prep_cfg = _hub_preprocessor(repo)
            sha, source = hf_cached_sha(repo, ("model.safetensors", "pytorch_model.bin")), f"hub {repo}"
        else:
            model = AutoModel.from_config(AutoConfig.from_pretrained(repo))
            prep_cfg = _hub_preprocessor(repo)
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError) as exc:
        if weights:
            raise UserError(
                f"backbone {spec.name!r}: cannot load {weights}: {type(exc).__name__}: {short_reason(exc, 200)}"
            ) from None
        raise offline_error(
            spec.name,
            f"the Hugging Face hub ({repo})",
            exc,
            f"the repository {repo} (`huggingface-cli download {repo} --local-dir DIR`)",
            "DIR",
        ) from None
    fallback = Preprocessing(size=spec.input_size, mean=spec.mean, std=spec.std, interpolation=spec.interpolation)
    prep = preprocessing_from_hf(prep_cfg, fallback, spec.input_size if "@" in spec.name else None)
    return HFBackbone(_image_tower(model).eval(), prep, sha, source)


def _hub_preprocessor(repo: str) -> dict[str, Any] | None:
    try:
        from huggingface_hub import hf_hub_download

        return _read_json(hf_hub_download(repo, "preprocessor_config.json"))
    except Exception:  # no preprocessor config: the spec's defaults stand
        return None


def resolve_member(repo: str) -> BackboneSpec:
    """``hf/<repo id>`` to a spec, without network access (metadata from the cache when present)."""
    if not _REPO.match(repo) or ".." in repo:
        raise KeyError(f"{repo!r} is not a Hugging Face repository id (owner/name)")
    prep = preprocessing_from_hf(_cached_preprocessor(repo), Preprocessing(size=224))

    def load(spec: BackboneSpec, **options: Any) -> HFBackbone:
        return load_hf(spec, repo, options)

    return BackboneSpec(
        name=f"hf/{repo}",
        load=load,
        family="hf",
        params=None,
        input_size=prep.size,
        mean=prep.mean,
        std=prep.std,
        interpolation=prep.interpolation,
        pretraining=f"see https://huggingface.co/{repo}",
        objective=guess_objective(repo),
        license="see the model card",
        citation=f"https://huggingface.co/{repo}",
        revision="hf:main",
        feature_kinds=(),
        description=f"transformers AutoModel {repo} (image tower); preprocessing from its preprocessor_config.json",
        options=common_options(),
    )


@hookimpl
def register_backbones(register):
    """The Hugging Face transformers family."""
    register(
        BackboneFamily(
            "hf/",
            resolve_member,
            candidates=None,
            description="Any transformers image backbone by repository id, through AutoModel "
            "(hub, or a local snapshot folder as `weights`).",
            examples=("hf/facebook/dinov2-base", "hf/google/vit-base-patch16-224-in21k"),
            license="per model",
            citation=CITATION,
        )
    )
