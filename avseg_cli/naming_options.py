"""Command-line options of the CLIP step that names the masks, shared by both methods and both commands."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from avseg_cli.values import FRACTION_METAVAR, fraction

TEMPLATES_OPTION = typer.Option(
    None, "--templates", metavar="vild|FILE", help="Prompt templates CLIP names the masks with (both methods; each "
    "class name is put in every template and the embeddings averaged): vild (the 14 templates of the official code, "
    "default) or a UTF-8 text file with one template per line, each holding one {} for the name. "
    "Example: --templates prompts.txt"
)
SCORE_THRESHOLD_OPTION = typer.Option(
    None, "--score-threshold", parser=fraction, metavar=FRACTION_METAVAR,
    help="The score an object needs to be kept (default: with --checkpoint 0.3, the official threshold on the CLIP "
    "class probability; zero-shot 0.2, on its final score). "
    "Example: --score-threshold 0.5"
)


@dataclass(frozen=True)
class NamingChoices:
    """`--templates` and `--score-threshold` as typed on the command line."""

    templates: str | None = None
    score_threshold: float | None = None

    def explicit(self) -> dict[str, object]:
        """Option name -> value (None where not given)."""
        return {"--templates": self.templates, "--score-threshold": self.score_threshold}

    def template_set(self) -> tuple[str, ...] | None:
        """The templates `--templates` names (None: the default set); a usage error when it names none."""
        from models.errors import AVSegError, UsageError
        from models.ovavss.prompts import resolve_templates

        if self.templates is None:
            return None
        try:
            return resolve_templates(self.templates)
        except AVSegError as error:
            raise UsageError(f"--templates: {error.message}") from None

    def predictor_kwargs(self) -> dict[str, object]:
        """As `AVSegPredictor.from_checkpoint` keyword arguments (the template file is read by it again, so the
        predictor can name it in its description; call `template_set` first to check it)."""
        kwargs: dict[str, object] = {}
        if self.templates is not None:
            kwargs["templates"] = self.templates
        if self.score_threshold is not None:
            kwargs["score_threshold"] = self.score_threshold
        return kwargs

    def zeroshot_config(self, config, clip_weights=None):
        """`config` (a `ZeroShotConfig`) with these options applied; `--clip-weights` (`clip_weights`) and
        `--templates` are usage errors when `--no-rescore` turns the CLIP re-scoring off."""
        from dataclasses import replace

        from models.errors import UsageError

        if clip_weights is not None and not config.rescore:
            raise UsageError("--clip-weights is for the CLIP re-scoring, which --no-rescore turns off")
        templates = self.template_set()
        if templates is not None:
            if not config.rescore:
                raise UsageError("--templates is for the CLIP re-scoring, which --no-rescore turns off")
            config = replace(config, clip_templates=templates)
        if self.score_threshold is not None:
            config = replace(config, score_threshold=self.score_threshold)
        return config
