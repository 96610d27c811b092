"""The model card, written from the manifest alone: what was trained on what, what was measured and how."""

from __future__ import annotations

# Published results on LIVE In the Wild with models trained and tested on splits of it (about 930 training
# photos each; GRMP-IQA with a fifth of them), as the papers report them: the company these numbers keep.
FIELD = (
    ("DEIQT", "80 % of LIVE In the Wild", 0.875),
    ("HyperIQA", "80 % of LIVE In the Wild", 0.859),
    ("DBCNN", "80 % of LIVE In the Wild", 0.851),
    ("GRMP-IQA", "a fifth of that", 0.836),
)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _cross_validation(fidelity: dict) -> list[str]:
    cv = fidelity["human_cross_validated"]
    pooled, folds = cv["pooled"], cv["per_fold"]
    lines = [
        "## Agreement with people: cross-validated (the number to trust)",
        "",
        cv["how"] + ".",
        "",
        "| | SRCC | PLCC (4-parameter logistic) | PLCC (linear) | mean abs. error | photos |",
        "|---|---|---|---|---|---|",
        f"| pooled over the {pooled['photos']} photos | {_fmt(pooled['srcc'])} | {_fmt(pooled['plcc'])} | {_fmt(pooled['plcc_linear'])} | {_fmt(pooled['mae'])} | {pooled['photos']} |",
    ]
    for fold, row in folds.items():
        lines.append(
            f"| fold {int(fold) + 1} | {_fmt(row['srcc'])} | {_fmt(row['plcc'])} | {_fmt(row['plcc_linear'])} | {_fmt(row['mae'])} | {row['photos']} |"
        )
    lines += [
        "",
        "Every photo above was scored by a network that never saw it; the shipped network is then trained the same way on "
        f"all 600, so it has no held-out photos of its own. Configurations cross-validated: {cv.get('configurations_tried', 'one')}. "
        "With about 120 photos a fold, one fold's SRCC is known to about +-0.04.",
        "",
        *_crop_layouts(cv.get("crop_layouts")),
        "For scale, models trained and tested on splits of this database publish:",
        "",
        "| model | trained on | SRCC |",
        "|---|---|---|",
        *[f"| {name} | {data} | {value:.3f} |" for name, data, value in FIELD],
        "",
    ]
    return lines


def _crop_layouts(layouts: dict | None) -> list[str]:
    if not layouts:
        return []
    return [
        "The same fold networks, scoring each photo through other crops of the runtime's 3 x 3 grid (the package reads the "
        "middle row); what fewer or more crops would give, not a choice made on these numbers:",
        "",
        "| crops | SRCC | PLCC | mean abs. error |",
        "|---|---|---|---|",
        *[f"| {name} | {_fmt(row['srcc'])} | {_fmt(row['plcc'])} | {_fmt(row['mae'])} |" for name, row in layouts.items()],
        "",
    ]


def _ladders(fidelity: dict) -> list[str]:
    ladders = fidelity["ladders"]["spearman_level_vs_iqa"]
    if not ladders:
        return ["## Damage", "", "Not measured yet.", ""]
    sizes = sorted({size for per_size in ladders.values() for size in per_size}, key=int)
    lines = [
        "## Damage: Spearman of damage level vs `iqa` (must be <= -0.85)",
        "",
        f"Held-out professional photos ({', '.join(fidelity['ladders']['photos'])}), each resized to the size shown, then damaged "
        "at six levels (clean and five steps); the mean over photos of each photo's Spearman.",
        "",
        "| kind | " + " | ".join(f"{s} px" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    lines += [f"| {kind} | " + " | ".join(_fmt(per_size.get(s)) for s in sizes) + " |" for kind, per_size in ladders.items()]
    return [*lines, ""]


def _clean(fidelity: dict) -> list[str]:
    clean = fidelity["clean_professional_photos"]
    if not clean:
        return ["## Clean professional photos", "", "Not measured yet.", ""]
    medians = clean["median_iqa"]
    return [
        "## Clean professional photos",
        "",
        "Median `iqa` of the same held-out photos, clean: "
        + ", ".join(f"{k} px {v}" if k != "native" else f"own size {v}" for k, v in medians.items())
        + f"; the largest move of one photo between 500 px and its own size: {clean['max_move_500_to_native']} points.",
        "",
    ]


def _difference(difference: dict | None) -> str:
    if not difference:
        return "(not measured)"
    return f"{difference['iaa']:.2f} (iaa) and {difference['ista']:.2f} (ista) points on {difference['images']} dev photos"


def _nima(view: dict) -> str:
    nima = view.get("iaa_vs_nima_heldout_records_this_package")
    return f"{nima['srcc']:.3f} ({nima['records']} records of {nima['photos']} photos)" if nima else "(not measured)"


def _this_package(checks: dict | None) -> str:
    if not checks:
        return "(not measured)"
    return (
        f"iaa vs NIMA on {checks['images']} held-out corpus photos {_fmt(checks['iaa_vs_nima_srcc'])}, iaa quartiles "
        f"{checks['iaa_quartiles_corpus']}; ista median-smoothing ladder {_fmt(checks['ista_median_smoothing_ladder'])}, "
        f"noise ladder {_fmt(checks['ista_noise_ladder'])}"
    )


def _whole_view(fidelity: dict) -> list[str]:
    view = fidelity["aesthetics_and_structure"]
    return [
        "## `iaa` and `ista`",
        "",
        f"The whole view's nodes are copied from {view['measured_on'].split(',')[0]}, and the numbers below were measured on it. "
        "In fp32 the copy computes exactly its iaa and ista (the export checks it); the int8 file is quantised again, with "
        "calibration ranges now taken from whole views only, so the default variant moves by at most "
        + _difference(view.get("difference_from_source"))
        + ".",
        f"- iaa vs NIMA, 0.1.0's protocol (held-out label records), this package's default variant: {_nima(view)}; "
        f"on {view['measured_on'].split(',')[0]}: {_fmt(view.get('iaa_vs_nima_srcc_heldout_records'))}; "
        f"on {view.get('images')} held-out corpus photos: {_fmt(view.get('iaa_vs_nima_srcc'))}; iaa quartiles there {view.get('iaa_quartiles_corpus')}",
        f"- ista: median-smoothing ladder {_fmt(view.get('ista_median_smoothing_ladder'))}, noise ladder {_fmt(view.get('ista_noise_ladder'))}",
        f"- this package's default variant, the same checks: {_this_package(view.get('this_package'))}",
        "",
    ]


def _training_time(iqa: dict) -> str:
    train = iqa.get("training", {})
    return f"{train.get('epochs')} epochs on all photos in {train.get('seconds', 0) / 60:.0f} min"


def model_card(manifest: dict) -> str:
    fidelity, provenance = manifest["fidelity"], manifest["provenance"]
    iqa = provenance["iqa"]
    variants = fidelity.get("int8_vs_fp32") or {}
    lines = [
        f"# {manifest['name']} {manifest['version']}",
        "",
        "**This is not a UniPercept distillation.** UniPercept's weights cannot be obtained where this package was built. "
        "`iqa` is learnt from people's opinion scores; `iaa` and `ista` follow open teachers.",
        "",
        *_cross_validation(fidelity),
        "## What it is",
        "",
        f"- `iqa`: {iqa['what']}.",
        f"  Trained on {iqa['trained_on']}. Held out: {iqa['held_out']}.",
        f"- `iaa`: {provenance['iaa']['what']}." if isinstance(provenance.get("iaa"), dict) else "- `iaa`: see provenance.iaa.",
        f"- `ista`: {provenance['ista']['what']}." if isinstance(provenance.get("ista"), dict) else "- `ista`: see provenance.ista.",
        "- Inputs: the whole image stretched to 224 x 224 for iaa and ista; for iqa, 224-px crops of the image at its own "
        f"pixels up to {manifest['input']['crops']['max_side']:,} px on the long side (a larger photo is cropped as if resized to that).",
        "",
        *_ladders(fidelity),
        *_clean(fidelity),
        *_whole_view(fidelity),
        "## Files",
        "",
        f"- sizes (MB): {fidelity.get('files_mb')}; int8 against fp32 (SRCC, largest difference): "
        + "; ".join(f"{axis} {v['srcc']:.4f}, {v['max_abs_diff']}" for axis, v in variants.items()),
        f"- rebuilt by: `{provenance['command']}`",
        f"- training time here (2 CPU cores, shared with other jobs): {_training_time(iqa)}",
        "",
    ]
    return "\n".join(lines)
