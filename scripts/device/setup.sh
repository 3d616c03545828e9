# Source me on the device machine: installs the carried wheels (.whl/) into /tmp/site.
# Installed once per warm machine: a second script in the same call (or the next call) finds the
# same wheels already there and skips pip's ~10 s. pip writes their byte code, as a user's
# install does: the image's own venv has none (each process compiles its modules from source).
stamp=$(ls -l .whl/ | md5sum | cut -c1-32)
if [ "$(cat /tmp/site/.lltrace-wheels 2>/dev/null)" != "$stamp" ]; then
  python3 -m pip install -q --no-index --no-deps --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
  echo "$stamp" > /tmp/site/.lltrace-wheels
fi
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1
lltrace() { python3 -m lltrace "$@"; }
python3 -c "import torch, torchao, textual; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name(), 'torchao', torchao.__version__)"
# flash-attn-4 (attention: flash4), when scripts/device/fetch_fa4.sh's chunks were carried.
if [ -d .fa4 ] || [ -d .fa4-site ]; then . scripts/device/fa4_env.sh; fi
