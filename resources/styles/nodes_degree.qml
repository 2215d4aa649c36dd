<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0-Firenze" styleCategories="Symbology">
  <renderer-v2 type="categorizedSymbol" attr="degree" symbollevels="0" enableorderby="0" forceraster="0">
    <categories>
      <category symbol="0" value="1" label="dead end (1)" render="true" type="long" />
      <category symbol="1" value="2" label="through (2)" render="true" type="long" />
      <category symbol="2" value="3" label="T-junction (3)" render="true" type="long" />
      <category symbol="3" value="4" label="crossing (4)" render="true" type="long" />
      <category symbol="4" value="" label="other" render="true" type="string" />
    </categories>
    <symbols>
      <symbol name="0" type="marker" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="name" type="QString" value="circle" />
            <Option name="color" type="QString" value="228,26,28,255" />
            <Option name="outline_color" type="QString" value="35,35,35,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="size" type="QString" value="1.6" />
            <Option name="size_unit" type="QString" value="MM" />
            <Option name="angle" type="QString" value="0" />
          </Option>
          <prop k="name" v="circle" />
          <prop k="color" v="228,26,28,255" />
          <prop k="outline_color" v="35,35,35,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="size" v="1.6" />
          <prop k="size_unit" v="MM" />
          <prop k="angle" v="0" />
        </layer>
      </symbol>
      <symbol name="1" type="marker" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="name" type="QString" value="circle" />
            <Option name="color" type="QString" value="150,150,150,255" />
            <Option name="outline_color" type="QString" value="35,35,35,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="size" type="QString" value="1" />
            <Option name="size_unit" type="QString" value="MM" />
            <Option name="angle" type="QString" value="0" />
          </Option>
          <prop k="name" v="circle" />
          <prop k="color" v="150,150,150,255" />
          <prop k="outline_color" v="35,35,35,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="size" v="1" />
          <prop k="size_unit" v="MM" />
          <prop k="angle" v="0" />
        </layer>
      </symbol>
      <symbol name="2" type="marker" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="name" type="QString" value="circle" />
            <Option name="color" type="QString" value="255,127,0,255" />
            <Option name="outline_color" type="QString" value="35,35,35,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="size" type="QString" value="2" />
            <Option name="size_unit" type="QString" value="MM" />
            <Option name="angle" type="QString" value="0" />
          </Option>
          <prop k="name" v="circle" />
          <prop k="color" v="255,127,0,255" />
          <prop k="outline_color" v="35,35,35,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="size" v="2" />
          <prop k="size_unit" v="MM" />
          <prop k="angle" v="0" />
        </layer>
      </symbol>
      <symbol name="3" type="marker" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="name" type="QString" value="circle" />
            <Option name="color" type="QString" value="55,126,184,255" />
            <Option name="outline_color" type="QString" value="35,35,35,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="size" type="QString" value="2.2" />
            <Option name="size_unit" type="QString" value="MM" />
            <Option name="angle" type="QString" value="0" />
          </Option>
          <prop k="name" v="circle" />
          <prop k="color" v="55,126,184,255" />
          <prop k="outline_color" v="35,35,35,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="size" v="2.2" />
          <prop k="size_unit" v="MM" />
          <prop k="angle" v="0" />
        </layer>
      </symbol>
      <symbol name="4" type="marker" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="name" type="QString" value="circle" />
            <Option name="color" type="QString" value="152,78,163,255" />
            <Option name="outline_color" type="QString" value="35,35,35,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="size" type="QString" value="2.4" />
            <Option name="size_unit" type="QString" value="MM" />
            <Option name="angle" type="QString" value="0" />
          </Option>
          <prop k="name" v="circle" />
          <prop k="color" v="152,78,163,255" />
          <prop k="outline_color" v="35,35,35,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="size" v="2.4" />
          <prop k="size_unit" v="MM" />
          <prop k="angle" v="0" />
        </layer>
      </symbol>
    </symbols>
    <source-symbol>
      <symbol name="0" type="marker" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleMarker" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="name" type="QString" value="circle" />
            <Option name="color" type="QString" value="128,128,128,255" />
            <Option name="outline_color" type="QString" value="35,35,35,255" />
            <Option name="outline_style" type="QString" value="solid" />
            <Option name="outline_width" type="QString" value="0.2" />
            <Option name="outline_width_unit" type="QString" value="MM" />
            <Option name="size" type="QString" value="1.5" />
            <Option name="size_unit" type="QString" value="MM" />
            <Option name="angle" type="QString" value="0" />
          </Option>
          <prop k="name" v="circle" />
          <prop k="color" v="128,128,128,255" />
          <prop k="outline_color" v="35,35,35,255" />
          <prop k="outline_style" v="solid" />
          <prop k="outline_width" v="0.2" />
          <prop k="outline_width_unit" v="MM" />
          <prop k="size" v="1.5" />
          <prop k="size_unit" v="MM" />
          <prop k="angle" v="0" />
        </layer>
      </symbol>
    </source-symbol>
  </renderer-v2>
  <layerGeometryType>0</layerGeometryType>
</qgis>
