"""layerscope: look inside causal language models, layer by layer.

Navigation and the shared sidebar (model picker) only; each page lives in pages/.
"""

import streamlit as st

from ui.model import sidebar
from ui.shell import shell

st.set_page_config(page_title="layerscope", page_icon="🔬", layout="wide")

PAGES = [
    st.Page("pages/logit_lens.py", title="Logit lens", icon="🔎", default=True),
    st.Page("pages/translation.py", title="Translation latent language", icon="🌐"),
    st.Page("pages/sequences.py", title="Sequence continuation", icon="🔢"),
    st.Page("pages/arithmetic.py", title="Numerals and arithmetic", icon="🧮"),
    st.Page("pages/quanta.py", title="Quanta", icon="🧩"),
    st.Page("pages/train.py", title="Train from scratch", icon="🏋️"),
    st.Page("pages/lookup.py", title="Key–value lookup", icon="🗝️"),
    st.Page("pages/information.py", title="Journey of information", icon="🧭"),
]

with shell():  # pages know they run inside the app (ui/shell.require_shell)
    navigation = st.navigation(PAGES)
    sidebar()
    navigation.run()
