"""Home agent data: utterances (English, Marathi in Devanagari, mixed) -> home tool calls.

Call convention (the agents contract; keys in this order):
  {"intent", "name"?, "area"?, "domain"?, "brightness"?, "temperature"?, "position"?}
  * a device named by its own name ("the garage light", "बेडरूममधला पंखा")  -> "name": that
    phrase, copied verbatim;
  * every device of a kind in an area ("all the lights in the kitchen", "kitchen चा light",
    "हॉलमधले सगळे पंखे") -> "area": the area's word as typed + "domain";
  * everything in an area ("turn off everything in the office") -> "area" alone.
In training, names and areas are whole words of the utterance, as the schema's grammar copies them
("x-copy": "words"): a Marathi case ending typed onto a name stays in the call ("स्वयंपाकघरातील",
"हॉलमधले"), and the resolvers strip it (bulletd.agents.home.case_stems).

Training draws a fresh random home for every line: area and device names composed from the
English and Marathi word lists below, people's names, made-up words in both scripts (some names
are made-up words only), so the model learns to copy names rather than to remember a house. Several
times the frames and word orders per action of the test pool (requests said as
wishes and duties, the device put first and pointed back to, other verbs and synonyms), common
words and typos (add_noise), typos in verbs and other words outside the name, and chatter: unknown
pseudo-words in both scripts before, after and between the words, often right next to the name or
area, commas, Devanagari typos (chatter), so that a word the model never saw is skipped, not
copied. The test split uses the example home's own
names, with templates, word orders and fillers that training never uses and typos in the non-name
words; a fifth of its lines also use verbs training never has (category "<lang>-novel", reported
apart: a child trained from scratch knows no word it never saw).
Lines on a given home carry `expect`: the Home Assistant service calls the call resolves to
(`resolve`, exact name / alias match or its case stem, the service list of the agents issue).

Line: {"text", "call", "category": "en"|"mr"|"mixed", "kind": action, "expect"?: [...]}
"""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bulletd.agents.home import DOMAINS, INTENTS, case_stems
from bulletd.agents.tools import HOME_SCHEMA, closed
from bulletd.runtime.grammar import is_word_char
from trainer.agentdata import TEMPLATE, check_split, compact_json
from trainer.agentdata.noise import COMMON, add_noise, typo
from trainer.agentdata.numbers import say

SCHEMA = closed(HOME_SCHEMA)   # the daemon's schema: names and areas copy whole words of the utterance
NAME_MAX = HOME_SCHEMA["properties"]["name"]["maxLength"]
KEY_ORDER = list(SCHEMA["properties"])

# --------------------------------------------------------------------------------------------------
# vocabulary for random homes (training). Device nouns per domain; Marathi nouns carry a gender
# for the possessive/locative agreement: m (चा/मधला), f (ची/मधली), n or p (चे/मधले).
# --------------------------------------------------------------------------------------------------

EN_DEVICES = {
    "light": ["light", "lamp", "lights", "ceiling light", "bulb", "spotlight", "led strip", "sconce", "lantern",
              "downlights", "night lamp", "desk lamp", "tube light", "string lights", "pendant light", "wall lamp"],
    "switch": ["plug", "socket", "kettle", "coffee machine", "water heater", "pump", "iron", "charger",
               "router", "fountain", "dehumidifier", "aquarium", "boiler", "motor", "smart plug"],
    "fan": ["fan", "ceiling fan", "exhaust fan", "table fan", "pedestal fan", "air purifier", "tower fan"],
    "climate": ["ac", "air conditioner", "thermostat", "heater", "heat pump", "radiator", "cooler"],
    "cover": ["blinds", "curtains", "shades", "shutters", "garage door", "gate", "window", "awning",
              "roller shutter", "skylight"],
    "lock": ["door", "front door", "back door", "side door", "gate lock", "main door", "deadbolt", "door lock"],
    "media_player": ["tv", "television", "speaker", "music system", "radio", "projector", "soundbar", "stereo"],
    "sensor": ["temperature", "humidity", "thermometer", "temperature sensor"],
}
MR_DEVICES = {
    "light": [("दिवा", "m"), ("दिवे", "p"), ("बल्ब", "m"), ("लाईट", "f"), ("ट्यूबलाईट", "f"), ("दिवाबत्ती", "f"),
              ("झुंबर", "n"), ("लॅम्प", "m"), ("लाइट", "f")],
    "switch": [("प्लग", "m"), ("गिझर", "m"), ("केटल", "f"), ("पंप", "m"), ("मोटर", "f"), ("इस्त्री", "f"),
               ("चार्जर", "m"), ("राउटर", "m"), ("कारंजे", "n")],
    "fan": [("पंखा", "m"), ("पंखे", "p"), ("फॅन", "m"), ("एक्झॉस्ट फॅन", "m")],
    "climate": [("एसी", "m"), ("हीटर", "m"), ("कूलर", "m"), ("थर्मोस्टॅट", "m")],
    "cover": [("पडदे", "p"), ("पडदा", "m"), ("शटर", "n"), ("खिडकी", "f"), ("फाटक", "n"), ("ब्लाइंड्स", "p")],
    "lock": [("दार", "n"), ("दरवाजा", "m"), ("कुलूप", "n"), ("मुख्य दरवाजा", "m"), ("मागचे दार", "n")],
    "media_player": [("टीव्ही", "m"), ("स्पीकर", "m"), ("रेडिओ", "m"), ("प्रोजेक्टर", "m"), ("म्युझिक सिस्टिम", "f")],
    "sensor": [("तापमान", "n"), ("आर्द्रता", "f"), ("तापमापक", "m")],
}
EN_AREAS = ["kitchen", "bedroom", "living room", "guest room", "study", "office", "garage", "hallway", "porch",
            "garden", "balcony", "dining room", "attic", "basement", "laundry", "pantry", "library", "nursery",
            "playroom", "gym", "terrace", "veranda", "lobby", "workshop", "den", "loft", "cellar", "patio",
            "master bedroom", "kids room", "guest bathroom", "second bedroom", "upstairs hall", "shed",
            "staircase", "prayer room", "store room", "back yard", "front yard", "utility room", "sunroom"]
MR_AREAS = ["स्वयंपाकघर", "किचन", "बेडरूम", "हॉल", "दिवाणखाना", "देवघर", "अंगण", "गच्ची", "बाल्कनी", "ओसरी",
            "माजघर", "पडवी", "व्हरांडा", "जिना", "तळघर", "अभ्यासिका", "ऑफिस", "बाथरूम", "न्हाणीघर", "गॅरेज",
            "बाग", "मुलांची खोली", "पाहुण्यांची खोली", "आईची खोली", "वरची खोली", "स्टोअररूम", "टेरेस",
            "लायब्ररी", "कोठीघर", "परसदार", "माडी", "पोटमाळा", "वाडा", "गोठा", "डायनिंग हॉल", "शयनगृह"]
EN_ADJ = ["big", "small", "red", "blue", "left", "right", "corner", "main", "old", "new", "round", "tall",
          "back", "front", "upper", "lower", "white", "green", "yellow", "smart", "tiny", "long"]
MR_ADJ = [("मोठा", "मोठी", "मोठे"), ("छोटा", "छोटी", "छोटे"), ("लाल", "लाल", "लाल"), ("निळा", "निळी", "निळे"),
          ("नवा", "नवी", "नवे"), ("जुना", "जुनी", "जुने"), ("उभा", "उभी", "उभे"), ("पिवळा", "पिवळी", "पिवळे"),
          ("डावा", "डावी", "डावे"), ("उजवा", "उजवी", "उजवे"), ("पांढरा", "पांढरी", "पांढरे"), ("हिरवा", "हिरवी", "हिरवे")]
PEOPLE_EN = ["ravi", "anita", "maya", "john", "priya", "sam", "neha", "arjun", "lisa", "omar", "tara", "vikram",
             "meera", "rohan", "kavya", "dad", "mom", "grandma", "aai", "baba", "sunil", "zoya"]
PEOPLE_MR = ["रवी", "अनिता", "माया", "प्रिया", "नेहा", "अर्जुन", "मीरा", "रोहन", "काव्या", "आई", "बाबा", "आजी",
             "आजोबा", "सुनील", "ताई", "दादा", "सई", "ओंकार"]
_LAT_SYL = ["ka", "ro", "mi", "zu", "ven", "ta", "lo", "shi", "ba", "ner", "qui", "do", "pa", "xel", "ri", "mo",
            "sa", "gor", "li", "fen"]
_DEV_SYL = ["क", "रो", "मी", "झु", "वेन", "ता", "लो", "शी", "बा", "नर", "कि", "दो", "प", "गो", "री", "मो", "सा",
            "लि", "फे", "चं", "पु", "धा", "नी"]
_GEN = {"m": ("चा", "मधला", "तला"), "f": ("ची", "मधली", "तली"), "n": ("चे", "मधले", "तले"), "p": ("चे", "मधले", "तले")}

# --------------------------------------------------------------------------------------------------
# templates. {N} device name, {A} area word, {D} device word for a whole kind, {V} value.
# TRAIN and TEST pools are disjoint (tests/test_agentdata.py checks it).
# --------------------------------------------------------------------------------------------------

T = {
    "train": {
        "en": {
            "on": ["turn on the {N}", "switch on the {N}", "turn the {N} on", "{N} on", "put the {N} on",
                   "power on the {N}", "switch the {N} on", "turn on {N}"],
            "off": ["turn off the {N}", "switch off the {N}", "turn the {N} off", "{N} off", "power off the {N}",
                    "switch the {N} off", "turn off {N}", "shut the {N} off"],
            "toggle": ["toggle the {N}", "toggle {N}", "flip the {N}"],
            "area_on": ["turn on all the {D} in the {A}", "switch on every {D1} in the {A}", "{A} {D} on, all of them",
                        "turn on the {D} in the {A}"],
            "area_off": ["turn off all the {D} in the {A}", "switch off every {D1} in the {A}",
                         "turn off the {D} in the {A}", "{A} {D} off, all of them"],
            "all_off": ["turn off everything in the {A}", "switch everything off in the {A}"],
            "light_set": ["set the {N} to {V}", "dim the {N} to {V}", "set {N} brightness to {V}", "{N} at {V}",
                          "put the {N} at {V}", "brightness of the {N} to {V}"],
            "temp_set": ["set the {N} to {V}", "set {N} temperature to {V}", "{N} to {V}", "put the {N} on {V}"],
            "area_temp": ["set the temperature in the {A} to {V}", "make the {A} {V}"],
            "open": ["open the {N}", "open {N}", "raise the {N}"],
            "close": ["close the {N}", "close {N}", "lower the {N}", "shut the {N}"],
            "position": ["set the {N} to {V}", "open the {N} to {V}", "{N} position {V}", "move the {N} to {V}"],
            "lock": ["lock the {N}", "lock {N}", "please lock the {N}"],
            "unlock": ["unlock the {N}", "unlock {N}"],
            "state": ["is the {N} on", "is the {N} off", "what is the {N}", "status of the {N}", "what's the {N}",
                      "tell me the {N}", "is {N} open"],
        },
        "mr": {
            "on": ["{N} चालू कर", "{N} सुरू कर", "{N} लाव", "{N} चालू करा", "{N} सुरू करा", "{N} चालू"],
            "off": ["{N} बंद कर", "{N} बंद करा", "{N} बंद", "{N} घालव"],
            "toggle": ["{N} उलट कर", "{N} टॉगल कर"],
            "area_on": ["{A}मधले सगळे {D} चालू कर", "{A}तले सगळे {D} लाव", "{A} मधले सर्व {D} सुरू करा"],
            "area_off": ["{A}मधले सगळे {D} बंद कर", "{A}तले सगळे {D} बंद करा", "{A} मधले सर्व {D} बंद कर"],
            "all_off": ["{A}मधलं सगळं बंद कर", "{A} मधले सगळे बंद करा"],
            "light_set": ["{N} {V} कर", "{N}ची प्रखरता {V} कर", "{N} {V} वर ठेव"],
            "temp_set": ["{N} {V} वर ठेव", "{N}चे तापमान {V} कर", "{N} {V} कर"],
            "area_temp": ["{A}चे तापमान {V} कर"],
            "open": ["{N} उघड", "{N} उघडा", "{N} वर कर"],
            "close": ["{N} बंद कर", "{N} लाव", "{N} खाली कर"],
            "position": ["{N} {V} उघड", "{N} {V} वर ठेव"],
            "lock": ["{N} लॉक कर", "{N}ला कुलूप लाव"],
            "unlock": ["{N} अनलॉक कर", "{N}चे कुलूप उघड"],
            "state": ["{N} चालू आहे का", "{N} किती आहे", "{N} काय आहे", "{N} बंद आहे का", "{N} उघडे आहे का"],
        },
        "mixed": {
            "on": ["{N} on कर", "{N} चालू कर please", "please {N} सुरू कर", "{N} on करा"],
            "off": ["{N} off कर", "{N} बंद कर please", "please {N} बंद कर", "{N} off करा"],
            "toggle": ["{N} toggle कर"],
            "area_on": ["{A} चा {D1} on कर", "{A} {D1} on कर", "{A} मधले {D} on करा"],
            "area_off": ["{A} चा {D1} बंद कर", "{A} {D1} off कर", "{A} मधले {D} off करा"],
            "all_off": ["{A} मधलं सगळं off कर"],
            "light_set": ["{N} {V} कर", "{N} brightness {V} कर"],
            "temp_set": ["{N} {V} कर", "{N} temperature {V} कर"],
            "area_temp": ["{A} चे temperature {V} कर"],
            "open": ["{N} open कर"],
            "close": ["{N} close कर"],
            "position": ["{N} {V} open कर"],
            "lock": ["{N} lock कर"],
            "unlock": ["{N} unlock कर"],
            "state": ["{N} on आहे का", "{N} status काय आहे", "{N} किती आहे"],
        },
    },
    "test": {   # the training verbs in frames, word orders and fillers training never uses
        "en": {
            "on": ["i want the {N} on", "could you turn the {N} on", "the {N}, turn it on", "make sure the {N} is on",
                   "{N} needs to be on"],
            "off": ["i want the {N} off", "the {N}, switch it off", "make sure the {N} is off", "{N} needs to be off",
                    "could you turn the {N} off"],
            "toggle": ["the {N}, toggle it", "could you toggle the {N}"],
            "area_on": ["in the {A} turn on all the {D}", "every {D1} in the {A} on"],
            "area_off": ["in the {A} turn off all the {D}", "every {D1} in the {A} off"],
            "all_off": ["in the {A} turn everything off", "everything in the {A} off"],
            "light_set": ["{N} brightness {V}", "the {N} at {V} if possible", "set brightness of the {N} to {V}"],
            "temp_set": ["the {N} at {V} if possible", "set the temperature of the {N} to {V}", "{N} temperature {V}"],
            "area_temp": ["in the {A} set the temperature to {V}"],
            "open": ["the {N}, open it", "could you open the {N}"],
            "close": ["the {N}, close it", "could you close the {N}"],
            "position": ["set {N} position to {V}", "the {N} position at {V}"],
            "lock": ["the {N}, lock it", "could you lock the {N}"],
            "unlock": ["the {N}, unlock it", "could you unlock the {N}"],
            "state": ["is the {N} on right now", "what's the status of the {N}", "{N} status"],
        },
        "mr": {
            "on": ["{N} आता चालू कर", "{N} चालू कर रे", "{N} सुरू करा हो"],
            "off": ["{N} आता बंद कर", "{N} बंद कर रे", "{N} बंद करा हो"],
            "toggle": ["{N} आता टॉगल कर"],
            "area_on": ["{A}मधले सगळे {D} आता चालू कर"],
            "area_off": ["{A}मधले सगळे {D} आता बंद कर"],
            "all_off": ["{A}मधलं सगळं आता बंद कर"],
            "light_set": ["{N} आता {V} कर", "{N}ची प्रखरता आता {V} कर"],
            "temp_set": ["{N} आता {V} वर ठेव", "{N}चे तापमान आता {V} कर"],
            "area_temp": ["{A}चे तापमान आता {V} कर"],
            "open": ["{N} आता उघड", "{N} उघडा हो"],
            "close": ["{N} आता खाली कर", "{N} खाली करा हो"],
            "position": ["{N} आता {V} उघड"],
            "lock": ["{N} आता लॉक कर"],
            "unlock": ["{N} आता अनलॉक कर"],
            "state": ["{N} आता चालू आहे का", "{N} आता किती आहे"],
        },
        "mixed": {
            "on": ["{N} आता on कर", "{N} on करा हो"],
            "off": ["{N} आता off कर", "{N} off करा हो"],
            "toggle": ["{N} आता toggle कर"],
            "area_on": ["{A} मधले सगळे {D} आता on करा"],
            "area_off": ["{A} मधले सगळे {D} आता off करा"],
            "all_off": ["{A} मधलं सगळं आता off कर"],
            "light_set": ["{N} आता brightness {V} कर"],
            "temp_set": ["{N} आता temperature {V} कर"],
            "area_temp": ["{A} चे temperature आता {V} कर"],
            "open": ["{N} आता open कर"],
            "close": ["{N} आता close कर"],
            "position": ["{N} आता {V} open कर"],
            "lock": ["{N} आता lock कर"],
            "unlock": ["{N} आता unlock कर"],
            "state": ["{N} आता on आहे का", "{N} चा status काय आहे"],
        },
    },
    "novel": {  # verbs training never uses: a model trained from scratch has never seen them;
                # test lines from here are reported apart (category "<lang>-novel")
        "en": {
            "on": ["could you start the {N}", "activate the {N}", "i want the {N} on", "fire up the {N}",
                   "get the {N} going", "enable the {N}"],
            "off": ["kill the {N}", "deactivate the {N}", "i want the {N} off", "disable the {N}",
                    "cut the {N}", "stop the {N}"],
            "toggle": ["flip over the {N}", "switch the state of the {N}"],
            "area_on": ["light up every {D1} in the {A}", "enable all {D} in the {A}"],
            "area_off": ["kill all {D} in the {A}", "disable every {D1} in the {A}"],
            "all_off": ["shut down everything in the {A}", "kill everything in the {A}"],
            "light_set": ["change the {N} to {V}", "make the {N} {V}", "adjust the {N} brightness to {V}"],
            "temp_set": ["change the {N} to {V}", "make the {N} {V}", "adjust the {N} to {V}"],
            "area_temp": ["change the temperature in the {A} to {V}"],
            "open": ["pull up the {N}", "draw open the {N}"],
            "close": ["pull down the {N}", "draw the {N} closed"],
            "position": ["change the {N} to {V}", "adjust the {N} position to {V}"],
            "lock": ["secure the {N}", "bolt the {N}"],
            "unlock": ["unbolt the {N}", "release the {N} lock"],
            "state": ["check the {N}", "what does the {N} say", "is the {N} running"],
        },
        "mr": {
            "on": ["{N} ऑन करून टाक", "{N} पेटव", "{N} चालू करशील का"],
            "off": ["{N} विझव", "{N} बंद करून टाक", "{N} बंद करशील का"],
            "toggle": ["{N} उलटा करून टाक"],
            "area_on": ["{A}मधले सर्व {D} पेटव", "{A}मधले सगळे {D} चालू करून टाक"],
            "area_off": ["{A}मधले सर्व {D} विझव", "{A}मधले सगळे {D} बंद करून टाक"],
            "all_off": ["{A}मधलं सगळं बंद करून टाक"],
            "light_set": ["{N} {V} करून टाक", "{N}चा उजेड {V} ठेव"],
            "temp_set": ["{N} {V} करून टाक", "{N} {V} ला ठेव"],
            "area_temp": ["{A}चे तापमान {V} करून टाक"],
            "open": ["{N} उघडून टाक"],
            "close": ["{N} बंद करून टाक"],
            "position": ["{N} {V} पर्यंत उघड"],
            "lock": ["{N} लॉक करून टाक"],
            "unlock": ["{N} अनलॉक करून टाक"],
            "state": ["{N} ची स्थिती सांग", "{N} सुरू आहे का"],
        },
        "mixed": {
            "on": ["{N} start करून टाक", "{N} ला on कर"],
            "off": ["{N} stop करून टाक", "{N} ला off कर"],
            "toggle": ["{N} ला toggle करून टाक"],
            "area_on": ["{A} मधले सगळे {D} start कर"],
            "area_off": ["{A} मधले सगळे {D} stop कर"],
            "all_off": ["{A} मधलं सगळं stop कर"],
            "light_set": ["{N} ला {V} set कर"],
            "temp_set": ["{N} ला {V} set कर"],
            "area_temp": ["{A} चे temperature {V} set कर"],
            "open": ["{N} ला open करून टाक"],
            "close": ["{N} ला close करून टाक"],
            "position": ["{N} ला {V} set कर"],
            "lock": ["{N} ला lock करून टाक"],
            "unlock": ["{N} ला unlock करून टाक"],
            "state": ["{N} चे status सांग"],
        },
    },
}
# more training frames and word orders per action (merged into T["train"]); none of them uses a word of
# the test or novel pools that training otherwise lacks (tests/test_agentdata.py checks it)
TRAIN_MORE = {
    "en": {
        "on": ["turn {N} on", "{N} turn on", "{N} switch on", "the {N} on", "on the {N}", "{N}, on", "switch {N} on",
               "put {N} on", "have the {N} on", "keep the {N} on", "leave the {N} on", "{N} should go on",
               "bring the {N} on", "power on the {N}", "{N} power on", "on with the {N}", "let's have the {N} on",
               "the {N} on now, please"],
        "off": ["turn {N} off", "{N} turn off", "{N} switch off", "the {N} off", "off the {N}", "{N}, off",
                "switch {N} off", "shut {N} off", "shut off the {N}", "keep the {N} off", "leave the {N} off",
                "have the {N} off", "{N} should go off", "power the {N} off", "put the {N} off", "{N} power off",
                "let's have the {N} off", "no more {N}, turn off"],
        "toggle": ["{N} toggle", "flip {N}", "the {N} toggle", "toggle the {N} now", "flip the {N} on or off",
                   "toggle the {N} on or off", "{N}, toggle"],
        "area_on": ["{A} {D} on", "turn the {A} {D} on", "turn on the {A} {D}", "all {D} in the {A} on",
                    "switch on all {D} in the {A}", "{A}: all {D} on", "all the {A} {D} on", "the {D} of the {A} on"],
        "area_off": ["{A} {D} off", "turn the {A} {D} off", "turn off the {A} {D}", "all {D} in the {A} off",
                     "switch off all {D} in the {A}", "{A}: all {D} off", "all the {A} {D} off",
                     "the {D} of the {A} off"],
        "all_off": ["everything off in the {A}", "{A} all off", "switch off the whole {A}", "all of the {A} off",
                    "turn the whole {A} off", "{A}, everything off", "power off everything in the {A}"],
        "light_set": ["{N} to {V}", "dim {N} to {V}", "the {N} at {V}", "{N} brightness to {V}", "{N} {V}",
                      "brightness {V} on the {N}", "set the brightness of the {N} to {V}", "bring the {N} to {V}",
                      "{N} at {V} brightness", "turn the {N} to {V}", "dim the {N} to {V}", "{N} to {V}",
                      "put {N} at {V}", "{N}: {V}"],
        "temp_set": ["{N} at {V}", "the {N} to {V}", "set {N} to {V}", "put {N} at {V}", "{N} temperature to {V}",
                     "turn the {N} to {V}", "keep the {N} at {V}", "{N}: {V}", "{V} on the {N}", "{N} on {V}"],
        "area_temp": ["{A} temperature to {V}", "set the {A} temperature to {V}", "temperature in the {A} to {V}",
                      "keep the {A} at {V}", "the {A} at {V}", "{A} to {V}", "set the {A} to {V}"],
        "open": ["open the {N} please", "{N} open", "the {N} open", "raise {N}", "open the {N} now", "{N}, open",
                 "open the {N} all the way"],
        "close": ["{N} close", "shut {N}", "lower {N}", "close the {N} now", "{N} shut", "the {N} close",
                  "{N}, close"],
        "position": ["{N} to {V}", "the {N} at {V}", "open {N} {V}", "set {N} position {V}", "{N} at {V}",
                     "raise the {N} to {V}", "lower the {N} to {V}", "position of the {N} to {V}"],
        "lock": ["{N} lock", "lock the {N} now", "the {N} lock", "{N} locked", "have the {N} locked",
                 "lock {N} please"],
        "unlock": ["{N} unlock", "the {N} unlock", "{N} unlocked", "unlock the {N} now", "have the {N} unlocked"],
        "state": ["is {N} on", "is the {N} open", "is the {N} locked", "{N}?", "what is the {N} at",
                  "the {N} on or off", "how is the {N}", "what's {N}", "show the {N}", "status of {N}", "is {N} off",
                  "{N} on or off?", "what's the {N} reading"],
    },
    "mr": {
        "on": ["{N} लावा", "{N} सुरू", "{N} चालू ठेव", "चालू कर {N}", "{N}ला चालू कर", "{N} सुरू करा की",
               "{N} चालू करायचा आहे", "सुरू कर {N}", "{N} लावून दे"],
        "off": ["{N} बंद ठेव", "बंद कर {N}", "{N}ला बंद कर", "{N} बंद करायचा आहे", "{N} घालवा", "{N} बंद करा की",
                "{N} बंद कर दे", "बंद करा {N}"],
        "toggle": ["{N} टॉगल करा", "टॉगल कर {N}", "{N}ला टॉगल कर", "{N} उलट करा"],
        "area_on": ["{A}{S} {D} चालू कर", "{A}{S} सगळे {D} सुरू कर", "{A}चे सगळे {D} चालू करा", "सगळे {A}{S} {D} लाव",
                    "{A}{S} {D} लावा"],
        "area_off": ["{A}{S} {D} बंद कर", "{A}{S} सगळे {D} बंद करा", "{A}चे सगळे {D} बंद कर",
                     "सगळे {A}{S} {D} बंद कर", "{A}{S} {D} घालव"],
        "all_off": ["{A}{S} सर्व बंद कर", "{A}चं सगळं बंद कर", "{A}{S} सगळं बंद करा", "{A} पूर्ण बंद कर"],
        "light_set": ["{N}ची प्रखरता {V}", "{N} {V} वर कर", "{N}चा प्रकाश {V} कर", "{N} {V} ठेवा", "{N} {V} करा",
                      "{N}ची प्रखरता {V} ठेव"],
        "temp_set": ["{N} {V} ठेव", "{N}चे तापमान {V} ठेव", "{N} {V} वर करा", "{N}चे तापमान {V} करा", "{N} {V} करा"],
        "area_temp": ["{A}चे तापमान {V} ठेव", "{A}{S} तापमान {V} कर", "{A}चं तापमान {V} करा", "{A}चे तापमान {V}"],
        "open": ["{N} उघडा ना", "{N} वर करा", "{N}ला उघड", "उघड {N}"],
        "close": ["{N} बंद करा", "{N} खाली करा", "{N} लावा", "{N} बंद"],
        "position": ["{N} {V} उघडा", "{N} {V} वर करा", "{N} {V} ठेव", "{N} {V} वर"],
        "lock": ["{N} लॉक करा", "{N}ला कुलूप लावा", "{N} लॉक"],
        "unlock": ["{N} अनलॉक करा", "{N}चे कुलूप उघडा", "{N} अनलॉक"],
        "state": ["{N} चालू आहे की बंद", "{N}चे काय झाले", "{N} कसा आहे", "{N} उघडे आहे की बंद", "{N} किती",
                  "{N} लॉक आहे का"],
    },
    "mixed": {
        "on": ["{N} on", "{N} on कर ना", "{N} चालू करा please", "on कर {N}", "{N} switch on कर", "{N} turn on करा",
               "please {N} on करा", "{N} on कर दे"],
        "off": ["{N} off", "{N} off कर ना", "{N} बंद करा please", "off कर {N}", "{N} switch off कर",
                "{N} turn off करा", "please {N} off करा"],
        "toggle": ["{N} toggle करा", "toggle कर {N}", "{N} toggle"],
        "area_on": ["{A} मधले सगळे {D} on कर", "{A}{S} {D} on कर", "{A} चे {D} on करा", "{A} {D} on"],
        "area_off": ["{A} मधले सगळे {D} off कर", "{A}{S} {D} off कर", "{A} चे {D} off करा", "{A} {D} off"],
        "all_off": ["{A}{S} सगळं off कर", "{A} सगळं off", "{A} मधलं सगळं बंद कर please"],
        "light_set": ["{N} {V} करा", "{N} brightness {V}", "{N} ची brightness {V} कर", "{N} {V} कर"],
        "temp_set": ["{N} {V} करा", "{N} temperature {V}", "{N} चे temperature {V} कर", "{N} {V} वर ठेव"],
        "area_temp": ["{A}{S} temperature {V} कर", "{A} temperature {V} करा"],
        "open": ["{N} open करा", "{N} open", "open कर {N}"],
        "close": ["{N} close करा", "{N} close", "close कर {N}"],
        "position": ["{N} {V} open करा", "{N} position {V} कर"],
        "lock": ["{N} lock करा", "{N} lock", "lock कर {N}"],
        "unlock": ["{N} unlock करा", "{N} unlock", "unlock कर {N}"],
        "state": ["{N} on आहे की off", "{N} status", "{N} चा status काय", "{N} off आहे का"],
    },
}
# still more: requests said as wishes and duties ("ensure the {N} is on", "{N} must go off"), the
# device put first and pointed back to ("the {N}, switch that on"), other verbs and synonyms, so
# that "is ... on" alone does not mean a question; none of it holds a word of the test pools
TRAIN_WIDE = {
    "en": {
        "on": ["ensure the {N} is on", "see that the {N} is on", "the {N} has to go on", "{N} must go on",
               "the {N}, switch that on", "{N}: put that on", "we need the {N} on", "bring on the {N}",
               "can the {N} go on", "switch on {N} please", "the {N} on, thank you", "let's have the {N} on",
               "{N} to on", "the {N} must go on", "power on the {N} please",
               "on, the {N}", "the {N}, on please", "{N} on please", "ensure {N} is on", "the {N} ought to go on",
               "light the {N}", "run the {N}", "the {N}: on"],
        "off": ["ensure the {N} is off", "see that the {N} is off", "the {N} has to go off", "{N} must go off",
                "the {N}, switch that off", "{N}: put that off", "we need the {N} off", "shut the {N}",
                "can the {N} go off", "switch off {N} please", "the {N} off, thank you", "{N} to off",
                "off, the {N}", "the {N}, off please", "{N} off please", "ensure {N} is off",
                "the {N} ought to go off", "no more {N}", "enough of the {N}, off", "the {N}: off"],
        "toggle": ["the {N}, flip that", "give the {N} a toggle", "{N} flip", "flip the {N} please",
                   "toggle {N} please", "the {N}: toggle"],
        "area_on": ["ensure all {D} in the {A} are on", "{A}: {D} on", "the {A} {D} must go on",
                    "all {D} on in the {A}", "we need the {A} {D} on"],
        "area_off": ["ensure all {D} in the {A} are off", "{A}: {D} off", "the {A} {D} must go off",
                     "all {D} off in the {A}", "we need the {A} {D} off"],
        "all_off": ["ensure everything in the {A} is off", "the whole {A} must go off", "all off in the {A}"],
        "light_set": ["{N} level {V}", "the {N} brightness at {V}", "{N} dimmed to {V}", "dim {N} {V}",
                      "set the {N} level to {V}", "{N} level to {V}", "the {N}, {V} please", "{N} should sit at {V}",
                      "ensure the {N} is at {V}", "the {N} has to go to {V}", "brighten the {N} to {V}"],
        "temp_set": ["{N} set at {V}", "cool the {N} to {V}", "warm the {N} to {V}", "the {N}, {V} please",
                     "ensure the {N} is at {V}", "{N} thermostat {V}", "the {N} has to go to {V}", "heat the {N} to {V}"],
        "area_temp": ["ensure the {A} is at {V}", "the {A} has to go to {V}", "{A}: {V}", "heat the {A} to {V}",
                      "cool the {A} to {V}"],
        "open": ["ensure the {N} is open", "the {N}, open that", "the {N} has to open",
                 "{N} must open", "we need the {N} open", "open {N} please"],
        "close": ["ensure the {N} is shut", "the {N}, close that", "{N} must close", "we need the {N} shut",
                  "close {N} please", "shut the {N} please"],
        "position": ["ensure the {N} is at {V}", "the {N}, {V} please", "{N} level {V}", "the {N} has to go to {V}"],
        "lock": ["ensure the {N} is locked", "the {N}, lock that", "{N} must stay locked",
                 "keep the {N} locked", "we need the {N} locked"],
        "unlock": ["ensure the {N} is unlocked", "the {N}, unlock that", "keep the {N} unlocked",
                   "we need the {N} unlocked", "unlock {N} please"],
        "state": ["is the {N} on at the moment", "how's the {N}", "the {N}, is that on", "the {N}: on or off",
                  "report the {N}", "{N} status please", "is the {N} on or off", "what about the {N}",
                  "is the {N} locked or not", "what's the {N} doing", "the {N}, on?"],
    },
    "mr": {
        "on": ["{N} चालू करायला हवा", "{N} सुरू ठेवा", "{N} चालू करावा", "{N} चालू कर बघू", "{N} लावून ठेव",
               "{N}, चालू कर", "{N} चालू व्हायला हवा", "{N} लावा बघू"],
        "off": ["{N} बंद करायला हवा", "{N} बंद ठेवा", "{N} बंद करावा", "{N} बंद कर बघू", "{N}, बंद कर",
                "{N} बंद व्हायला हवा", "{N} घालवून दे"],
        "toggle": ["{N} टॉगल कर बघू", "{N}, टॉगल कर"],
        "light_set": ["{N} {V} करायला हवा", "{N}ची प्रखरता {V} करावी", "{N} {V} कर बघू"],
        "temp_set": ["{N} {V} करायला हवा", "{N} {V} वर ठेवा", "{N}, {V} कर"],
        "lock": ["{N} लॉक कर बघू", "{N}ला कुलूप लावून ठेव", "{N} लॉक करायला हवे", "{N}, लॉक कर"],
        "unlock": ["{N} अनलॉक कर बघू", "{N} अनलॉक करायला हवे", "{N}, अनलॉक कर"],
        "state": ["{N} चालू आहे ना", "{N} बंद आहे ना", "{N}चे काय", "{N} लॉक आहे की नाही"],
        "open": ["{N} उघडायला हवे", "{N}, उघड"],
        "close": ["{N} खाली करायला हवे", "{N}, खाली कर"],
    },
    "mixed": {
        "on": ["{N} on करायचा", "{N} on ठेव", "{N} on कर बघू", "{N}, on कर", "{N} on करायला हवा"],
        "off": ["{N} off करायचा", "{N} off ठेव", "{N} off कर बघू", "{N}, off कर", "{N} off करायला हवा"],
        "toggle": ["{N} toggle कर बघू", "{N}, toggle कर"],
        "light_set": ["{N} {V} कर बघू", "{N} ची brightness {V} ठेव", "{N} level {V} कर"],
        "temp_set": ["{N} {V} ठेव", "{N} चे temperature {V} ठेव"],
        "lock": ["{N} lock कर बघू", "{N}, lock कर", "{N} lock करायला हवे"],
        "unlock": ["{N} unlock कर बघू", "{N}, unlock कर"],
        "state": ["{N} on आहे ना", "{N} चा status", "{N} locked आहे का"],
        "open": ["{N} open कर बघू", "{N}, open कर"],
        "close": ["{N} close कर बघू", "{N}, close कर"],
    },
}
for _more in (TRAIN_MORE, TRAIN_WIDE):
    for _lang, _acts in _more.items():
        for _act, _tpls in _acts.items():
            T["train"][_lang][_act] += [t for t in _tpls if t not in T["train"][_lang][_act]]
PRE = {"train": {"en": ["", "", "", "", "", "please ", "can you ", "hey, ", "ok ", "hi ", "please, ", "hey you ",
                        "ok so ", "umm ", "alright, ", "can u ", "will you ", "pls ", "so ", "quick, ", "hey assistant, "],
                 "mr": ["", "", "", "", "कृपया ", "जरा ", "ए ", "अहो ", "ऐक ", "प्लीज ", "जरा लवकर ", "बरं, "],
                 "mixed": ["", "", "", "", "please ", "जरा ", "hey ", "ए ", "please जरा ", "अहो ", "ok "]},
       "test": {"en": ["", "kindly ", "yo ", "hello there, ", "would you "], "mr": ["", "अरे ", "एक काम कर, "],
                "mixed": ["", "अरे ", "bro "]}}
POST = {"train": {"en": ["", "", "", "", " please", " now", " thanks", " pls", " thank you", " thx", " ok",
                         " at once", " immediately", " soon", " please and thanks", " when you can"],
                  "mr": ["", "", "", "", " ना", " प्लीज", " बघू", " बरं का", " पटकन", " लवकर", " जरा"],
                  "mixed": ["", "", "", "", " ना", " now", " please", " जरा", " पटकन", " quick", " pls"]},
        "test": {"en": ["", " asap", " right away", " for me"], "mr": ["", " लगेच", " आत्ता"],
                 "mixed": ["", " लगेच", " fast"]}}

EN_PLURAL = {"light": ["lights", "lamps"], "fan": ["fans"], "switch": ["switches", "plugs"],
             "cover": ["blinds", "curtains", "shades"], "media_player": ["speakers", "tvs"]}
EN_SINGULAR = {"light": ["light", "lamp"], "fan": ["fan"], "switch": ["switch", "plug"],
               "cover": ["blind", "curtain"], "media_player": ["speaker", "tv"]}
MR_PLURAL = {"light": ["दिवे", "लाईट"], "fan": ["पंखे"], "switch": ["प्लग", "स्विच"], "cover": ["पडदे"],
             "media_player": ["स्पीकर", "टीव्ही"]}
MIXED_WORD = {"light": ["light", "lights"], "fan": ["fan", "fans"], "switch": ["switch", "plug"],
              "cover": ["curtains", "blinds"], "media_player": ["tv", "speaker"]}

ACTIONS_BY_DOMAIN = {
    "light": ["on", "off", "toggle", "light_set", "state"], "switch": ["on", "off", "toggle", "state"],
    "fan": ["on", "off", "toggle", "state"], "media_player": ["on", "off", "toggle", "state"],
    "climate": ["temp_set", "state"], "cover": ["open", "close", "position", "state"],
    "lock": ["lock", "unlock", "state"], "sensor": ["state"],
}
INTENT_OF = {"on": "HassTurnOn", "off": "HassTurnOff", "toggle": "HassToggle", "light_set": "HassLightSet",
             "temp_set": "HassClimateSetTemperature", "open": "HassOpenCover", "close": "HassCloseCover",
             "position": "HassSetPosition", "lock": "HassLockLock", "unlock": "HassLockUnlock",
             "state": "HassGetState", "area_on": "HassTurnOn", "area_off": "HassTurnOff", "all_off": "HassTurnOff",
             "area_temp": "HassClimateSetTemperature"}
VALUE_KEY = {"light_set": "brightness", "temp_set": "temperature", "area_temp": "temperature", "position": "position"}


def make_call(action: str, name=None, area=None, domain=None, value=None) -> dict:
    call = {"intent": INTENT_OF[action]}
    if name is not None:
        call["name"] = name
    if area is not None:
        call["area"] = area
    if domain is not None:
        call["domain"] = domain
    if value is not None:
        call[VALUE_KEY[action]] = value
    return call


# --------------------------------------------------------------------------------------------------
# numbers in utterances
# --------------------------------------------------------------------------------------------------

def _spell_value(rng: random.Random, action: str, value, lang: str) -> str:
    """A value as typed: digits, Devanagari digits or words, with a unit word or sign (or none)."""
    whole = float(value).is_integer()
    if lang == "en":
        kind = rng.choice(["digits", "digits", "en_words"] if whole else ["digits"])
    elif lang == "mr":
        kind = rng.choice(["deva", "deva", "mr_words", "digits"] if whole else ["deva", "digits"])
    else:
        kind = rng.choice(["digits", "deva", "en_words", "mr_words"] if whole else ["digits", "deva"])
    s = say(int(value) if whole else value, kind)
    mr = kind in ("deva", "mr_words") or (lang == "mr" and kind == "digits")
    if action in ("light_set", "position"):
        units = ([" टक्के", "%", " %", ""] if mr else ["%", " percent", " %", ""])
        if kind.endswith("words"):
            units = [" टक्के", ""] if mr else [" percent", ""]
    else:
        units = ([" अंश", " डिग्री", "°", ""] if mr else [" degrees", "°", " degrees celsius", "°C", ""])
        if kind.endswith("words"):
            units = [" अंश", " डिग्री", ""] if mr else [" degrees", ""]
    return s + rng.choice(units)


def _value(rng: random.Random, action: str, lo=16, hi=30):
    if action in ("light_set", "position"):
        r = rng.random()
        return rng.randrange(0, 101, 10) if r < 0.4 else (rng.randrange(0, 101, 5) if r < 0.7 else rng.randint(0, 100))
    if rng.random() < 0.15:
        return rng.randint(2 * lo, 2 * hi) / 2   # 22.5
    return rng.randint(lo, hi)


# --------------------------------------------------------------------------------------------------
# random names (training)
# --------------------------------------------------------------------------------------------------

def _madeup(rng: random.Random, devanagari: bool) -> str:
    syl = _DEV_SYL if devanagari else _LAT_SYL
    return "".join(rng.choice(syl) for _ in range(rng.randint(2, 3)))


def random_area(rng: random.Random, script: str) -> str:
    r = rng.random()
    if script == "latin":
        if r < 0.7:
            return rng.choice(EN_AREAS)
        if r < 0.85:
            return f"{rng.choice(PEOPLE_EN)}'s room" if rng.random() < 0.5 else f"{rng.choice(PEOPLE_EN)} room"
        return _madeup(rng, False) + rng.choice(["", " room", " hall"])
    if r < 0.75:
        return rng.choice(MR_AREAS)
    if r < 0.88:
        return rng.choice(PEOPLE_MR) + "ची खोली"
    return _madeup(rng, True) + rng.choice(["", " खोली"])


_MR_OBLIQUE = ["मुलांच्या", "पाहुण्यांच्या", "मोठ्या", "वरच्या", "खालच्या", "मागच्या", "पुढच्या", "छोट्या"]
_ROOM_IN = {"m": ("खोलीतला", "खोलीमधला", "खोलीतील"), "f": ("खोलीतली", "खोलीमधली", "खोलीतील"),
            "n": ("खोलीतले", "खोलीमधले", "खोलीतील"), "p": ("खोलीतले", "खोलीमधले", "खोलीतील")}


def _in_area(rng: random.Random, area: str, g: str) -> str:
    """A Devanagari area with a possessive/locative ending ("स्वयंपाकघरातला", "हॉलमधला", "बाग चा")."""
    suffix = rng.choice(_GEN[g])
    if suffix[0] == "त" and not ("\u093e" <= area[-1] <= "\u094d") and rng.random() < 0.6:
        suffix = rng.choice("ाे") + suffix
    return f"{area}{suffix}" if rng.random() < 0.8 else f"{area} {suffix}"


def random_name(rng: random.Random, domain: str, script: str) -> str:
    """A device name of the domain, in Latin or Devanagari script."""
    r = rng.random()
    if r < 0.06:      # a name with no word of the vocabulary: only copying gets it right
        return " ".join(_madeup(rng, script == "deva") for _ in range(rng.randint(1, 2)))
    r = rng.random()
    if script == "latin":
        dev = rng.choice(EN_DEVICES[domain])
        if r < 0.4:
            return f"{random_area(rng, 'latin')} {dev}"
        if r < 0.52:
            return dev
        if r < 0.64:
            return f"{rng.choice(EN_ADJ)} {dev}"
        if r < 0.74:
            return f"{rng.choice(PEOPLE_EN)}'s {dev}"
        if r < 0.8:
            return f"{_madeup(rng, False)} {dev}"
        if r < 0.88:
            return f"{dev} in the {random_area(rng, 'latin')}"
        return f"{random_area(rng, 'latin')} {rng.choice(EN_ADJ)} {dev}"
    dev, g = rng.choice(MR_DEVICES[domain])
    gi = {"m": 0, "f": 1}.get(g, 2)
    if r < 0.45:
        return f"{_in_area(rng, random_area(rng, 'deva'), g)} {dev}"
    if r < 0.55:
        return dev
    if r < 0.67:
        return f"{rng.choice(MR_ADJ)[gi]} {dev}"
    if r < 0.77:
        return f"{rng.choice(PEOPLE_MR)}{_GEN[g][0]} {dev}"
    if r < 0.82:
        return f"{_madeup(rng, True)} {dev}"
    if r < 0.92:
        who = rng.choice(_MR_OBLIQUE + [p + "च्या" for p in PEOPLE_MR])
        return f"{who} {rng.choice(_ROOM_IN[g])} {dev}"
    return f"{_in_area(rng, random_area(rng, 'deva'), g)} {rng.choice(MR_ADJ)[gi]} {dev}"


def random_home(seed: int, n_areas: int = 8, n_entities: int = 32) -> dict:
    """A home no child has seen, as the data of a home YAML (bulletd.agents.home.HomeConfig):
    areas and devices named from the generator's vocabulary and made-up words, each with an
    English and a Devanagari name, every name unique."""
    rng = random.Random(f"home/random-home/{seed}")
    used: set[str] = set()

    def fresh(draw) -> str:
        for _ in range(200):
            n = draw()
            k = _norm(n)
            if k not in used and len(n) <= NAME_MAX:
                used.add(k)
                return n
        raise RuntimeError("could not draw a fresh name")

    areas = []
    for i in range(n_areas):
        names = [fresh(lambda: random_area(rng, "latin")), fresh(lambda: random_area(rng, "deva"))]
        areas.append({"id": f"area_{i}", "names": names})
    ents = []
    for i in range(n_entities):
        d = rng.choices(DOMAINS, weights=[6, 3, 3, 3, 3, 2, 2, 1])[0]
        e = {"id": f"{d}.device_{i}", "area": rng.choice(areas)["id"],
             "names": [fresh(lambda: random_name(rng, d, "latin")), fresh(lambda: random_name(rng, d, "deva"))]}
        if d != "sensor":
            e["command_topic"] = f"home/device_{i}/set"
        if d == "climate":
            e["min_temp"], e["max_temp"] = 16, 30
        ents.append(e)
    return {"areas": areas, "entities": ents}


# --------------------------------------------------------------------------------------------------
# homes (for `expect`): the example home's YAML keys, read here with a small local resolver
# --------------------------------------------------------------------------------------------------

@dataclass
class Entity:
    id: str
    area: str
    names: list[str]
    dimmable: bool = True
    min_temp: float = -50
    max_temp: float = 100

    @property
    def domain(self) -> str:
        return self.id.split(".", 1)[0]


@dataclass
class Home:
    areas: dict[str, list[str]]                     # area id -> names
    entities: list[Entity] = field(default_factory=list)

    @classmethod
    def load(cls, path) -> "Home":
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        areas = {a["id"]: [str(n) for n in a.get("names", [])] for a in raw["areas"]}
        ents = [Entity(e["id"], e.get("area", ""), [str(n) for n in e.get("names", [])], e.get("dimmable", True),
                       e.get("min_temp", -50), e.get("max_temp", 100)) for e in raw["entities"]]
        return cls(areas, ents)


def _norm(s: str) -> str:
    return " ".join(s.casefold().split())


def _matching(text: str, named: list) -> list:
    """The items whose names hold text exactly (normalised), else the first of its Marathi case
    stems (bulletd.agents.home.case_stems: "स्वयंपाकघरातील" -> "स्वयंपाकघर") that some hold."""
    key = _norm(text)
    for k in (key, *case_stems(key)):
        out = [x for x, names in named if k in map(_norm, names)]
        if out:
            return out
    return []


SERVICE = {"HassTurnOn": "turn_on", "HassTurnOff": "turn_off", "HassToggle": "toggle"}
AREA_DEFAULT = ("light", "switch", "fan", "media_player")


def resolve(call: dict, home: Home) -> list[dict]:
    """The service calls of `call` on `home` (exact normalised name/alias match). Raises ValueError
    for an unknown name or an impossible call: the generator only keeps lines that resolve."""
    intent = call["intent"]
    targets = home.entities
    if "name" in call:
        targets = _matching(call["name"], [(e, e.names) for e in targets])
        if len(targets) != 1:
            raise ValueError(f"name {call['name']!r} matches {len(targets)} entities")
    if "area" in call:
        ids = _matching(call["area"], list(home.areas.items()))
        if len(ids) != 1:
            raise ValueError(f"area {call['area']!r} matches {len(ids)} areas")
        targets = [e for e in targets if e.area == ids[0]]
    if "domain" in call:
        targets = [e for e in targets if e.domain == call["domain"]]
    elif "name" not in call:
        targets = [e for e in targets if e.domain in AREA_DEFAULT]
    if not targets:
        raise ValueError("no target")
    out = []
    for e in targets:
        d = e.domain
        if intent in SERVICE and d in AREA_DEFAULT:
            out.append({"service": f"{d}.{SERVICE[intent]}", "entity_id": e.id})
        elif intent == "HassLightSet" and d == "light" and e.dimmable:
            out.append({"service": "light.turn_on", "entity_id": e.id, "data": {"brightness_pct": call["brightness"]}})
        elif intent == "HassClimateSetTemperature" and d == "climate" and e.min_temp <= call["temperature"] <= e.max_temp:
            out.append({"service": "climate.set_temperature", "entity_id": e.id,
                        "data": {"temperature": call["temperature"]}})
        elif intent in ("HassOpenCover", "HassCloseCover") and d == "cover":
            out.append({"service": "cover." + ("open_cover" if intent == "HassOpenCover" else "close_cover"),
                        "entity_id": e.id})
        elif intent == "HassSetPosition" and d == "cover":
            out.append({"service": "cover.set_cover_position", "entity_id": e.id, "data": {"position": call["position"]}})
        elif intent in ("HassLockLock", "HassLockUnlock") and d == "lock":
            out.append({"service": "lock." + ("lock" if intent == "HassLockLock" else "unlock"), "entity_id": e.id})
        elif intent == "HassGetState":
            out.append({"service": "get_state", "entity_id": e.id})
        else:
            raise ValueError(f"{intent} does not apply to {e.id}")
    return sorted(out, key=lambda c: c["entity_id"])


# --------------------------------------------------------------------------------------------------
# generation
# --------------------------------------------------------------------------------------------------

NOISE = 0.5   # share of training lines (random homes) with context noise (trainer.agentdata.noise)


def _value_texts(v) -> list[str]:
    out = [say(v, "digits"), say(v, "deva")]
    if float(v).is_integer():
        out += [say(int(v), "en_words"), say(int(v), "mr_words")]
    return out


def _is_deva(s: str) -> bool:
    return any("\u0900" <= ch <= "\u097f" for ch in s)


def _typo(rng: random.Random, text: str, keep: list[str]) -> str:
    """One typo in an ASCII word of at least 4 letters that is not part of a copied slot."""
    words = text.split(" ")
    protected = set()
    for k in keep:
        protected.update(k.split(" "))
    idx = [i for i, w in enumerate(words) if w.isascii() and w.isalpha() and len(w) >= 4 and w not in protected]
    if not idx:
        return text
    i = rng.choice(idx)
    w = words[i]
    j = rng.randrange(1, len(w) - 1)
    op = rng.randrange(3)
    words[i] = (w[:j] + w[j + 1] + w[j] + w[j + 2:]) if op == 0 else (w[:j] + w[j + 1:] if op == 1 else w[:j] + w[j] + w[j:])
    return " ".join(words)


def _fill(rng, split, lang, action, name=None, area=None, dword=None, dword1=None, vtext=None) -> str:
    """A filled template of the split's pool ("novel": the test fillers with the novel verbs)."""
    tpl = rng.choice(T[split][lang][action])
    split = "test" if split == "novel" else split
    if "{S}" in tpl:
        tpl = tpl.replace("{S}", _case_ending(rng, area))
    text = tpl.replace("{N}", name or "").replace("{A}", area or "").replace("{D1}", dword1 or "") \
        .replace("{D}", dword or "").replace("{V}", vtext or "")
    return rng.choice(PRE[split][lang]) + text + rng.choice(POST[split][lang])


# Marathi locative endings a training area takes ("{A}{S}"); the call names the whole word
# ("स्वयंपाकघरातील") and the resolver strips the ending (bulletd.agents.home.case_stems)
LOCATIVE = ["मधले", "मधील", "मध्ये", "तले", "तील", "तल्या", "मधल्या", "मधला", "मधली", "तला", "तली"]


def _case_ending(rng, area: str) -> str:
    if not _is_deva(area[-1]):
        return " " + rng.choice(["मधले", "मध्ये", "मधील"])      # "kitchen मधले"
    suf = rng.choice(LOCATIVE)
    if suf[0] == "त" and not ("\u093e" <= area[-1] <= "\u094d") and rng.random() < 0.7:
        return rng.choice("ाे") + suf                              # the oblique: "स्वयंपाकघरातील", "बागेतले"
    return (" " if rng.random() < 0.15 else "") + suf


def _area_words(rng, lang, domain):
    if lang == "en":
        return rng.choice(EN_PLURAL[domain]), rng.choice(EN_SINGULAR[domain])
    if lang == "mr":
        w = rng.choice(MR_PLURAL[domain])
        return w, w
    w = rng.choice(MIXED_WORD[domain])
    return w, w


def _script_for(lang, rng) -> str:
    if lang == "en":
        return "latin"
    if lang == "mr":
        return "deva"
    return rng.choice(["latin", "deva"])


_BANNED = None


def banned_words() -> set:
    """Every word of the test and novel templates and test fillers (never used as noise)."""
    global _BANNED
    if _BANNED is None:
        import re

        from trainer.agentdata import calc

        out = set()
        for mod in (sys.modules[__name__], calc):
            for pool in ("test", "novel"):
                for lang in mod.T[pool].values():
                    for tpls in lang.values():
                        for t in tpls:
                            t = t[0] if isinstance(t, tuple) else t
                            out.update(re.findall(r"[\w\u0900-\u097f']+", re.sub(r"\{\w+\}", " ", t).casefold()))
            for d in (mod.PRE["test"], mod.POST["test"]):
                for fs in d.values():
                    for f in fs:
                        out.update(re.findall(r"[\w\u0900-\u097f']+", f.casefold()))
        _BANNED = out
    return _BANNED


def whole_words(text: str, part: str) -> str:
    """part (a substring of text) widened to whole words of text: what the grammar lets a name copy."""
    a = text.find(part)
    b = a + len(part)
    while a > 0 and is_word_char(text[a - 1]):
        a -= 1
    while b < len(text) and is_word_char(text[b]):
        b += 1
    return text[a:b]


# pseudo-words people's chatter is made of, in both scripts ("bro", "अरे" are test fillers: training
# learns to skip words it does not know, wherever they sit, instead of a list of fillers)
_CH_LAT = ["b", "br", "y", "h", "k", "m", "n", "d", "t", "s", "z", "g", "l", "p", "v", "w", "ch", "sh", "j", "r"]
_CH_VOW = ["a", "o", "u", "e", "i", "aa", "ey", "oo", "ah", "uh"]
_CH_DEV = ["अ", "ए", "ओ", "य", "हे", "ह", "बा", "रा", "मा", "ना", "गं", "तू", "जा", "वा", "खू", "पो", "डी", "भा",
           "चा", "ला", "क", "ट", "झ", "घे", "सो", "दे",
           "आ", "इ", "उ", "ऐ", "औ", "आं", "ई"]   # vowel-initial too: an unknown "आ..." word is no "आहे" (a question)


def _pseudo(rng: random.Random, deva: bool) -> str:
    banned = banned_words()
    while True:
        if deva:
            w = "".join(rng.choice(_CH_DEV) for _ in range(rng.randint(1, 3)))
        else:
            w = "".join(rng.choice(_CH_LAT) + rng.choice(_CH_VOW) for _ in range(rng.randint(1, 2)))
            w += rng.choice(["", "", "", "h", "y", "s", "t", "n", "k"])
        if w not in banned and len(w) > 1:
            return w


def chatter(rng: random.Random, text: str, keep, p: float = 0.5) -> str:
    """text with (probability p) a few unknown or common words before, after or between its words
    (never inside a kept span), sometimes a comma after them, and a typo in a Devanagari word."""
    if rng.random() >= p:
        return text
    common = [w for w in COMMON if w not in banned_words()]
    deva = _is_deva(text)
    words = []
    for _ in range(rng.choices([1, 2, 3], weights=[5, 3, 1])[0]):
        r = rng.random()
        words.append(_pseudo(rng, deva and rng.random() < 0.7) if r < 0.55 else rng.choice(common))
    spans = [(i, i + len(k)) for k in keep if k for i in [text.find(k)] if i >= 0]
    r = rng.random()
    if r < 0.3 and spans[:1]:   # right next to the name or area: the copy must start and stop at it
        a, b = rng.choice(spans[:2])
        if rng.random() < 0.5:
            text = text[:a] + " ".join(words) + rng.choice([" ", " ", ", "]) + text[a:]
        else:
            text = text[:b] + rng.choice([" ", " ", ", "]) + " ".join(words) + text[b:]
    elif r < 0.5:
        text = " ".join(words) + rng.choice([" ", " ", ", "]) + text
    elif r < 0.65:
        text = text + rng.choice([" ", " ", ", "]) + " ".join(words)
    else:
        cuts = [i for i, ch in enumerate(text) if ch == " " and not any(a < i < b for a, b in spans)]
        if cuts:
            i = rng.choice(cuts)
            text = text[:i] + " " + " ".join(words) + text[i:]
    if rng.random() < 0.2:           # a typo in a Devanagari word outside the kept spans
        spans = [(i, i + len(k)) for k in keep if k for i in [text.find(k)] if i >= 0]
        pos, cand = 0, []
        for w in text.split(" "):
            if _is_deva(w) and len(w) >= 3 and not any(a < pos + len(w) and pos < b for a, b in spans):
                cand.append((pos, w))
            pos += len(w) + 1
        if cand:
            a, w = rng.choice(cand)
            text = text[:a] + typo(rng, w) + text[a + len(w):]
    return text


CHATTER = 0.55   # share of training lines with chatter (pseudo-words, commas, Devanagari typos)
VERB_TYPO = 0.2  # share of training lines with a typo in an ASCII word outside the name, area and value


def _line(rng, split, lang, kind, text, call, home=None) -> dict:
    if split == "train":
        if home is None:
            v = call.get("brightness", call.get("temperature", call.get("position")))
            keep = [call.get("name"), call.get("area")] + ([] if v is None else _value_texts(v))
            text = add_noise(rng, text, keep, banned_words(), p=NOISE)
            text = chatter(rng, text, keep, p=CHATTER)
            if rng.random() < VERB_TYPO:
                text = _typo(rng, text, [k for k in keep if k])
        call = dict(call)
        for k in ("name", "area"):   # the call names whole words of the text (the grammar's x-copy rule)
            if k in call:
                assert call[k] in text, (k, call, text)
                call[k] = whole_words(text, call[k])
                if len(call[k]) > NAME_MAX:
                    raise ValueError(f"{k} longer than {NAME_MAX} characters: {call[k]!r}")
    for k in ("name", "area"):
        assert k not in call or call[k] in text, (k, call, text)
    line = {"text": text, "call": {k: call[k] for k in KEY_ORDER if k in call},
            "category": lang + ("-novel" if split == "novel" else ""), "kind": kind}
    if home is not None:
        line["expect"] = resolve(line["call"], home)
    return line


def _action(rng: random.Random, domain: str) -> str:
    """An action for a device of the domain; state questions take about one line in six."""
    acts = ACTIONS_BY_DOMAIN[domain]
    if len(acts) == 1 or rng.random() < 0.15:
        return "state" if "state" in acts else acts[0]
    return rng.choice([a for a in acts if a != "state"])


def _one_random(rng: random.Random, split: str) -> dict:
    lang = rng.choices(["en", "mr", "mixed"], weights=[4, 3, 3])[0]
    r = rng.random()
    if r < 0.16:   # a whole kind in an area, everything in an area, or an area's thermostat
        action = rng.choices(["area_on", "area_off", "all_off", "area_temp"], weights=[4, 4, 2, 2])[0]
        area = random_area(rng, _script_for(lang, rng))
        if action == "area_temp":
            v = _value(rng, action)
            return _line(rng, split, lang, action, _fill(rng, split, lang, action, area=area,
                                                         vtext=_spell_value(rng, action, v, lang)),
                         make_call(action, area=area, domain="climate", value=v))
        if action == "all_off":
            return _line(rng, split, lang, action, _fill(rng, split, lang, action, area=area), make_call(action, area=area))
        domain = rng.choices(AREA_DEFAULT, weights=[6, 1, 2, 1])[0]
        dword, dword1 = _area_words(rng, lang, domain)
        return _line(rng, split, lang, action, _fill(rng, split, lang, action, area=area, dword=dword, dword1=dword1),
                     make_call(action, area=area, domain=domain))
    domain = rng.choices(DOMAINS, weights=[6, 3, 3, 3, 3, 2, 2, 1])[0]
    action = _action(rng, domain)
    name = random_name(rng, domain, _script_for(lang, rng))
    v = _value(rng, action) if action in VALUE_KEY else None
    vtext = _spell_value(rng, action, v, lang) if v is not None else None
    return _line(rng, split, lang, action, _fill(rng, split, lang, action, name=name, vtext=vtext),
                 make_call(action, name=name, value=v))


def _one_on_home(rng: random.Random, split: str, home: Home) -> dict:
    """A line about the given home: its own entity and area names, with `expect`."""
    for _ in range(100):
        lang = rng.choices(["en", "mr", "mixed"], weights=[4, 3, 3])[0]
        if rng.random() < 0.16:
            action = rng.choices(["area_on", "area_off", "all_off", "area_temp"], weights=[4, 4, 2, 2])[0]
            area_id = rng.choice(sorted(home.areas))
            names = [n for n in home.areas[area_id] if (_is_deva(n) == (lang == "mr")) or lang == "mixed"]
            if not names:
                continue
            area = rng.choice(names)
            if action == "area_temp":
                ents = [e for e in home.entities if e.area == area_id and e.domain == "climate"]
                if len(ents) != 1:
                    continue
                v = _value(rng, action, int(ents[0].min_temp), int(ents[0].max_temp))
                text = _fill(rng, split, lang, action, area=area, vtext=_spell_value(rng, action, v, lang))
                call = make_call(action, area=area, domain="climate", value=v)
            elif action == "all_off":
                text, call = _fill(rng, split, lang, action, area=area), make_call(action, area=area)
            else:
                domain = rng.choices(AREA_DEFAULT, weights=[6, 1, 2, 1])[0]
                dword, dword1 = _area_words(rng, lang, domain)
                text = _fill(rng, split, lang, action, area=area, dword=dword, dword1=dword1)
                call = make_call(action, area=area, domain=domain)
        else:
            e = rng.choice(home.entities)
            action = _action(rng, e.domain)
            if action == "light_set" and not e.dimmable:
                continue
            names = [n for n in e.names if (_is_deva(n) == (lang == "mr")) or lang == "mixed"]
            if not names:
                continue
            name = rng.choice(names)
            v = _value(rng, action, int(e.min_temp), int(e.max_temp)) if action in VALUE_KEY else None
            if v is not None and action == "temp_set" and not (e.min_temp <= v <= e.max_temp):
                continue
            vtext = _spell_value(rng, action, v, lang) if v is not None else None
            text = _fill(rng, split, lang, action, name=name, vtext=vtext)
            call = make_call(action, name=name, value=v)
        if lang == "mixed" and not (_is_deva(text) and any(c.isascii() and c.isalpha() for c in text)):
            continue   # "mixed" means both scripts in the line
        try:
            line = _line(rng, split, lang, action, text, call, home)
        except ValueError:
            continue
        if split != "train" and rng.random() < 0.3:
            typo = _typo(rng, line["text"], [call.get("name", ""), call.get("area", "")])
            if typo != line["text"] and call.get("name", "") in typo and call.get("area", "") in typo:
                line["text"] = typo
                line["typo"] = True
        return line
    raise RuntimeError("could not draw a line on this home (does it have entities with names?)")


NOVEL_SHARE = 0.2   # of the test split: lines with verbs training never uses ("<lang>-novel")


def generate(split: str = "train", n: int = 1000, seed: int = 0, home: Home | None = None):
    """Yield n lines. Without a home each line is about a fresh random home; with one, about it.
    The test split holds the test pool's phrasings and, for NOVEL_SHARE of the lines, novel verbs."""
    check_split(split)
    rng = random.Random(f"home/{split}/{seed}")
    for _ in range(n):
        pool = "novel" if split == "test" and rng.random() < NOVEL_SHARE else split
        if home is not None:
            yield _one_on_home(rng, pool, home)
        else:
            while True:
                try:
                    line = _one_random(rng, pool)
                    break
                except ValueError:    # a name past the schema's maxLength: draw again
                    continue
            if split == "test" and rng.random() < 0.3:
                line["text"] = _typo(rng, line["text"], [line["call"].get("name", ""), line["call"].get("area", "")])
            yield line


def schema() -> dict:
    return SCHEMA


def header(template: str = TEMPLATE) -> dict:
    return {"tool": "home", "schema": SCHEMA, "template": template}


__all__ = ["generate", "resolve", "Home", "SCHEMA", "compact_json"]
