#!/usr/bin/env bash
# Device call: the baseline doctor's decode stage alone, in-process, isolated, and channels-last +
# cuDNN benchmark (did the isolated H200 run's decode capture failure come from isolation?)
. scripts/device/setup.sh >/dev/null 2>&1 || exit 1
for v in "--no-isolate" "--isolate" "--no-isolate --set decoder_layout=channels_last --set cudnn_benchmark=true"; do
  t0=$SECONDS
  timeout 120 python3 -m lltrace doctor -p baseline --stage decode --no-compile $v --json > /tmp/d.json 2>/tmp/d.err
  echo "== $v: exit $? in $((SECONDS-t0)) s"
  python3 -c "
import json; r=json.load(open('/tmp/d.json')); s=r['stages'][0]
print(s['verdict'], r.get('attention'), [ (f['kind'], f.get('message','')[:150], f.get('where')) for f in s['findings']][:3])" 2>&1 | tail -3
done
