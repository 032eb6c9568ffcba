"""A1111's `modules.api` package: the helpers extensions' own routes import (`api.decode_base64_to_image`,
`api.encode_pil_to_base64`) and `models` (imported with `*` by extensions such as rembg)."""
