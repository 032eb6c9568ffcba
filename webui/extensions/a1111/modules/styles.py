"""A1111's `modules.styles`: `shared.prompt_styles` (a `StyleDatabase`), a view of our styles.csv
(webui/prompts/styles.py). `styles` maps names to `PromptStyle(name, prompt, negative_prompt, path)`."""
from __future__ import annotations

from collections import namedtuple

from webui.extensions.a1111.runtime import RUNTIME

PromptStyle = namedtuple("PromptStyle", ["name", "prompt", "negative_prompt", "path"])


def merge_prompts(style_prompt: str, prompt: str) -> str:
    from webui.prompts.styles import merge_prompt
    return merge_prompt(style_prompt, prompt)


def apply_styles_to_prompt(prompt: str, styles: list[str]) -> str:
    for style in styles:
        prompt = merge_prompts(style, prompt)
    return prompt


class StyleDatabase:
    """`shared.prompt_styles`: reads and writes go to the server's style database (styles.csv)."""

    def _ours(self):
        return RUNTIME.require().styles

    @property
    def path(self) -> str:
        return str(self._ours().path)

    @property
    def styles(self) -> dict[str, PromptStyle]:
        return {s.name: PromptStyle(s.name, s.prompt, s.negative_prompt, self.path) for s in self._ours().all()}

    def reload(self) -> None:
        """Our database rereads styles.csv by itself when the file changes."""

    def get_style_prompts(self, styles: list[str]) -> list[str]:
        known = self.styles
        return [known[name].prompt for name in styles if name in known]

    def get_negative_style_prompts(self, styles: list[str]) -> list[str]:
        known = self.styles
        return [known[name].negative_prompt for name in styles if name in known]

    def apply_styles_to_prompt(self, prompt: str, styles: list[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_style_prompts(styles))

    def apply_negative_styles_to_prompt(self, prompt: str, styles: list[str]) -> str:
        return apply_styles_to_prompt(prompt, self.get_negative_style_prompts(styles))

    def save_styles(self, path: str | None = None) -> None:
        """Our styles are saved as they change (the Styles editor, `/sdapi/v1/prompt-styles`)."""

    def __repr__(self) -> str:
        return f"<StyleDatabase {self.path}>"
