"""Chats with a running `nvlm serve` through the official `openai` Python package, unmodified: an image question,
whole and streamed, and a plain completion. Usage: python3 scripts/openai_client_check.py BASE_URL API_KEY IMAGE
(e.g. http://127.0.0.1:8000/v1 KEY assets/coffee.jpg). Exits non-zero if the client or the answers disagree."""

import base64
import sys

from openai import OpenAI

base_url, api_key, image = sys.argv[1:4]
client = OpenAI(base_url=base_url, api_key=api_key)
url = "data:image/jpeg;base64," + base64.b64encode(open(image, "rb").read()).decode()
messages = [{"role": "user", "content": [
    {"type": "text", "text": "What is in the image?"},
    {"type": "image_url", "image_url": {"url": url}},
]}]
models = [m.id for m in client.models.list().data]
whole = client.chat.completions.create(model=models[0], messages=messages, max_tokens=8, temperature=0)
text = whole.choices[0].message.content
parts = []
for chunk in client.chat.completions.create(model=models[0], messages=messages, max_tokens=8, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
plain = client.completions.create(model=models[0], prompt="The capital of France is", max_tokens=4)
print("models:", models)
print("chat:", repr(text), whole.usage)
print("streamed equals whole:", "".join(parts) == text)
print("completion:", repr(plain.choices[0].text), plain.usage)
if "".join(parts) != text or whole.usage.prompt_tokens < 7 * 256:
    sys.exit(1)
