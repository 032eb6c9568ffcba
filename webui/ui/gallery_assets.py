"""CSS of the buttons under the galleries (gallery_actions.py) and of the no-checkpoint notice
(checkpoint_notice.py)."""
from __future__ import annotations

CSS = """
#txt2img_send_buttons, #img2img_send_buttons { align-items: center; gap: 6px; flex-wrap: wrap; }
#txt2img_send_buttons .tool-button, #img2img_send_buttons .tool-button { align-self: center; margin-bottom: 0; }
.html-log p { margin: 4px 0; font-size: 0.9em; opacity: 0.85; }
#no_checkpoint_notice { align-items: center; gap: 12px; padding: 8px 12px; margin: 4px 0 8px 0;
  border: 1px solid var(--color-accent, #f97316); border-radius: 8px;
  background: var(--color-accent-soft, rgba(249, 115, 22, 0.12)); }
#no_checkpoint_notice .no-checkpoint code { word-break: break-all; }
"""
