"""Tooltips and accessible names of the page's icon buttons (as A1111's hints give its tool buttons titles).

One mapping, applied by the page script on load and to every button added later (a MutationObserver that only
looks at added nodes, batched once per frame): a button whose elem_id matches a pattern of `BY_ID` gets that
hint, else one whose text is a known icon gets `BY_ICON`'s (so buttons added by other parts of the page, or by
extensions, that use the same icons are covered too); an icon button Gradio named itself (a slider's ↺) gets its
name as its tooltip. A hint is (name, tooltip): the name becomes `aria-label`,
the tooltip `title`; a title or aria-label the button already has is kept.

The styles picker (`{tab}_styles`, shown without its label) gets "Styles" as its placeholder and accessible name.
"""
from __future__ import annotations

import json

# elem_id pattern (a JavaScript regular expression, matched against the whole id) -> (name, tooltip)
BY_ID: list[tuple[str, tuple[str, str]]] = [
    (r"refresh_sd_model_checkpoint", ("Refresh checkpoints", "Look for new checkpoint files and refresh the list")),
    (r"refresh_sd_vae", ("Refresh VAEs", "Look for new VAE files and refresh the list")),
    (r"(txt2img|img2img)_extra_networks", ("Extra networks", "Show or hide the extra networks: checkpoints, "
                                                              "embeddings and LoRAs to add to the prompt")),
    (r"(txt2img|img2img)_paste", ("Read generation parameters", "Read generation parameters from the prompt box "
                                                                "(or, when it is empty, from the last generation) "
                                                                "into the fields")),
    (r"(txt2img|img2img)_clear_prompt", ("Clear prompt", "Clear the prompt and the negative prompt")),
    (r"(txt2img|img2img)_style_apply(_dialog)?", ("Apply styles", "Write the selected styles into the prompts "
                                                                  "(and unselect them)")),
    (r"(txt2img|img2img)_styles_edit_button", ("Edit styles", "Open the style editor: create, edit or delete a style")),
    (r"(txt2img|img2img)_style_copy", ("Copy prompts into the style", "Copy the current prompts into the style "
                                                                      "being edited")),
    (r"refresh_(txt2img|img2img)_styles", ("Refresh styles", "Read styles.csv again and refresh the styles list")),
    (r"(txt2img|img2img)_res_switch_btn", ("Swap width and height", "Swap the width and height values")),
    (r"(txt2img|img2img)_random_seed", ("Random seed", "Set the seed to -1: each generation picks a new random "
                                                       "seed")),
    (r"(txt2img|img2img)_random_subseed", ("Random variation seed", "Set the variation seed to -1: each generation "
                                                                    "picks a new random one")),
    (r"(txt2img|img2img)_reuse_seed", ("Reuse seed", "Put the seed of the last generation (of the selected image) "
                                                     "into the seed field")),
    (r"(txt2img|img2img)_reuse_subseed", ("Reuse variation seed", "Put the variation seed of the last generation "
                                                                  "into the variation seed field")),
    (r"(txt2img|img2img)_hr_refresh", ("Refresh hires. fix lists", "Refresh the upscaler and checkpoint lists of "
                                                                   "Hires. fix")),
    (r"script_(txt2img|img2img)_refiner_checkpoint_refresh", ("Refresh refiner checkpoints",
                                                              "Look for new checkpoint files for the refiner")),
    (r"(txt2img|img2img)_controlnet_ControlNet-\d+_controlnet_trigger_preprocessor",
     ("Run preprocessor", "Run the preprocessor on the unit's image and show the result")),
    (r"(txt2img|img2img)_controlnet_ControlNet-\d+_controlnet_refresh_models",
     ("Refresh ControlNet models", "Look for new ControlNet model files and refresh the list")),
    (r"xyz_grid_fill_[xyz]_tool_button", ("Fill values", "Fill the axis values with every choice of its type")),
    (r"(txt2img|img2img)_open_folder", ("Open output folder", "Open the folder the images are saved in "
                                                                     "(on the server's computer)")),
    (r"save_(txt2img|img2img)", ("Save", "Save the selected image into the save folder and its parameters "
                                                "into its log.csv")),
    (r"save_zip_(txt2img|img2img)", ("Zip", "Save the images into the save folder as one zip file")),
    (r"(txt2img|img2img)_send_to_extras", ("Send to extras", "Send the selected image to the Extras tab")),
    (r"extras_refresh_upscalers", ("Refresh upscalers", "Look for new upscaler model files and refresh the lists")),
    (r"refresh_checkpoint_[ABC]", ("Refresh checkpoints", "Look for new checkpoint files and refresh the list")),
    (r"modelmerger_refresh_bake_in_vae", ("Refresh VAEs", "Look for new VAE files and refresh the list")),
    (r"extensions_refresh", ("Refresh extensions", "Read the installed extensions again")),
    (r"(txt2img|img2img)_restored_dismiss", ("Dismiss", "Hide this note")),
]

# the button's text (an icon; U+FE0F variation selectors ignored) -> (name, tooltip), when no elem_id matched
BY_ICON: dict[str, tuple[str, str]] = {
    "🔄": ("Refresh", "Refresh the list"),
    "🎴": ("Extra networks", "Show or hide the extra networks"),
    "📋": ("Apply styles", "Write the selected styles into the prompts"),
    "💾": ("Save", "Save"),
    "🎲": ("Random seed", "Set the seed to -1: each generation picks a new random seed"),
    "♻": ("Reuse seed", "Reuse the seed of the last generation"),
    "💥": ("Run preprocessor", "Run the preprocessor and show the result"),
    "↙": ("Read generation parameters", "Read generation parameters from the prompt or the last generation"),
    "🗑": ("Clear", "Clear the prompt"),
    "⇅": ("Swap", "Swap the two values"),
    "📂": ("Open folder", "Open the output folder"),
    "🗜": ("Zip", "Save the images as one zip file"),
    "📐": ("Send to extras", "Send the selected image to the Extras tab"),
    "🖌": ("Edit", "Edit"),
    "🔧": ("Edit metadata", "Edit this item's metadata"),
    "📒": ("Fill values", "Fill the values with every choice"),
    "📝": ("Copy", "Copy the current prompts"),
    "✕": ("Close", "Close"),
    "×": ("Close", "Close"),
    "🔍": ("Search", "Search"),
    "↺": ("Reset", "Reset to the default value"),
    "🔀": ("Swap", "Swap the values"),
    "⬆": ("Ascending", "Sorted ascending: click for descending"),
    "⬇": ("Descending", "Sorted descending: click for ascending"),
}

STYLES_LABEL = "Styles"

CSS = """
/* Gradio's Share (to Hugging Face Spaces) means nothing offline; our galleries and images leave it out, this hides
   it where an extension's component did not */
button[aria-label="Share"] { display: none !important; }
.webui-styles-picker:has(.token) input::placeholder { color: transparent; }
"""

SCRIPT = """
  (() => {
    const byId = %(by_id)s.map(([pattern, hint]) => [new RegExp(`^(?:${pattern})$`), hint]);
    const byIcon = %(by_icon)s;
    const stylesLabel = %(styles_label)s;
    const iconOf = (button) => button.textContent.replace(/\\ufe0f/g, '').trim();
    const hintFor = (button) => {
      // Gradio puts the elem_id on the button, or on a wrapper holding only it
      const holder = button.id ? button : button.parentElement?.closest('[id]');
      const id = holder && (holder === button || holder.querySelectorAll('button').length === 1) ? holder.id : '';
      for (const [pattern, hint] of byId) if (pattern.test(id)) return hint;
      return byIcon[iconOf(button)] || null;
    };
    const label = (button) => {
      const hint = hintFor(button);
      const named = button.getAttribute('aria-label');
      if (hint === null) {  // Gradio's own icon buttons (a slider's ↺) have a name: it is their tooltip too
        if (named && !button.title && iconOf(button).length <= 2) button.title = named;
        return;
      }
      if (!named) button.setAttribute('aria-label', hint[0]);
      if (!button.title) button.title = hint[1];
    };
    const stylesPicker = (input) => {
      const picker = input.closest('[id$="_styles"]');
      if (picker === null || !/^(txt2img|img2img)_styles$/.test(picker.id)) return;
      picker.classList.add('webui-styles-picker');
      if (!input.placeholder) input.placeholder = stylesLabel;
      if (!input.getAttribute('aria-label')) input.setAttribute('aria-label', stylesLabel);
    };
    const visit = (node) => {
      if (node.nodeType !== 1) return;
      if (node.tagName === 'BUTTON') label(node);
      for (const button of node.querySelectorAll('button')) label(button);
      for (const input of node.querySelectorAll('[id$="_styles"] input')) stylesPicker(input);
    };
    let pending = [];
    const flush = () => {
      const nodes = pending;
      pending = [];
      for (const node of nodes) if (node.isConnected) visit(node);
    };
    new MutationObserver((mutations) => {
      const first = pending.length === 0;
      for (const mutation of mutations) {
        for (const node of mutation.addedNodes) pending.push(node);
        if (mutation.target.tagName === 'BUTTON') pending.push(mutation.target);  // its text came later
      }
      if (first && pending.length) requestAnimationFrame(flush);
    }).observe(document.body, {childList: true, subtree: true});
    visit(document.body);
  })();
""" % {"by_id": json.dumps(BY_ID, ensure_ascii=False), "by_icon": json.dumps(BY_ICON, ensure_ascii=False),
       "styles_label": json.dumps(STYLES_LABEL)}
