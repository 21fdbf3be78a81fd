"""layerscope: look inside causal language models, layer by layer.

Navigation and the shared sidebar (model picker and its load status) only; each page lives in pages/ and puts
its own inputs in the sidebar under the picker.
"""

import streamlit as st

from ui.model import model_status, sidebar
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
    st.Page("pages/features.py", title="Features", icon="✨"),
    st.Page("pages/circuits.py", title="Circuits", icon="🕸️"),
    st.Page("pages/history.py", title="History", icon="🗂️"),
]

with shell(PAGES):  # pages know they run inside the app (ui/shell.require_shell)
    navigation = st.navigation(PAGES)
    sidebar()
    model_status()
    navigation.run()
