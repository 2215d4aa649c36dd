<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>
<qgis version="3.28.0-Firenze" styleCategories="Symbology">
  <renderer-v2 type="graduatedSymbol" attr="confidence" graduatedMethod="GraduatedColor" symbollevels="0" enableorderby="0" forceraster="0">
    <ranges>
      <range symbol="0" lower="0.000000" upper="0.200000" label="0.00 - 0.20" render="true" />
      <range symbol="1" lower="0.200000" upper="0.400000" label="0.20 - 0.40" render="true" />
      <range symbol="2" lower="0.400000" upper="0.600000" label="0.40 - 0.60" render="true" />
      <range symbol="3" lower="0.600000" upper="0.800000" label="0.60 - 0.80" render="true" />
      <range symbol="4" lower="0.800000" upper="1.000000" label="0.80 - 1.00" render="true" />
    </ranges>
    <symbols>
      <symbol name="0" type="line" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="line_color" type="QString" value="215,25,28,255" />
            <Option name="line_width" type="QString" value="0.8" />
            <Option name="line_width_unit" type="QString" value="MM" />
            <Option name="line_style" type="QString" value="solid" />
            <Option name="capstyle" type="QString" value="round" />
            <Option name="joinstyle" type="QString" value="round" />
            <Option name="offset" type="QString" value="0" />
          </Option>
          <prop k="line_color" v="215,25,28,255" />
          <prop k="line_width" v="0.8" />
          <prop k="line_width_unit" v="MM" />
          <prop k="line_style" v="solid" />
          <prop k="capstyle" v="round" />
          <prop k="joinstyle" v="round" />
          <prop k="offset" v="0" />
        </layer>
      </symbol>
      <symbol name="1" type="line" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="line_color" type="QString" value="235,140,110,255" />
            <Option name="line_width" type="QString" value="0.8" />
            <Option name="line_width_unit" type="QString" value="MM" />
            <Option name="line_style" type="QString" value="solid" />
            <Option name="capstyle" type="QString" value="round" />
            <Option name="joinstyle" type="QString" value="round" />
            <Option name="offset" type="QString" value="0" />
          </Option>
          <prop k="line_color" v="235,140,110,255" />
          <prop k="line_width" v="0.8" />
          <prop k="line_width_unit" v="MM" />
          <prop k="line_style" v="solid" />
          <prop k="capstyle" v="round" />
          <prop k="joinstyle" v="round" />
          <prop k="offset" v="0" />
        </layer>
      </symbol>
      <symbol name="2" type="line" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="line_color" type="QString" value="255,255,191,255" />
            <Option name="line_width" type="QString" value="0.8" />
            <Option name="line_width_unit" type="QString" value="MM" />
            <Option name="line_style" type="QString" value="solid" />
            <Option name="capstyle" type="QString" value="round" />
            <Option name="joinstyle" type="QString" value="round" />
            <Option name="offset" type="QString" value="0" />
          </Option>
          <prop k="line_color" v="255,255,191,255" />
          <prop k="line_width" v="0.8" />
          <prop k="line_width_unit" v="MM" />
          <prop k="line_style" v="solid" />
          <prop k="capstyle" v="round" />
          <prop k="joinstyle" v="round" />
          <prop k="offset" v="0" />
        </layer>
      </symbol>
      <symbol name="3" type="line" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="line_color" type="QString" value="140,202,128,255" />
            <Option name="line_width" type="QString" value="0.8" />
            <Option name="line_width_unit" type="QString" value="MM" />
            <Option name="line_style" type="QString" value="solid" />
            <Option name="capstyle" type="QString" value="round" />
            <Option name="joinstyle" type="QString" value="round" />
            <Option name="offset" type="QString" value="0" />
          </Option>
          <prop k="line_color" v="140,202,128,255" />
          <prop k="line_width" v="0.8" />
          <prop k="line_width_unit" v="MM" />
          <prop k="line_style" v="solid" />
          <prop k="capstyle" v="round" />
          <prop k="joinstyle" v="round" />
          <prop k="offset" v="0" />
        </layer>
      </symbol>
      <symbol name="4" type="line" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="line_color" type="QString" value="26,150,65,255" />
            <Option name="line_width" type="QString" value="0.8" />
            <Option name="line_width_unit" type="QString" value="MM" />
            <Option name="line_style" type="QString" value="solid" />
            <Option name="capstyle" type="QString" value="round" />
            <Option name="joinstyle" type="QString" value="round" />
            <Option name="offset" type="QString" value="0" />
          </Option>
          <prop k="line_color" v="26,150,65,255" />
          <prop k="line_width" v="0.8" />
          <prop k="line_width_unit" v="MM" />
          <prop k="line_style" v="solid" />
          <prop k="capstyle" v="round" />
          <prop k="joinstyle" v="round" />
          <prop k="offset" v="0" />
        </layer>
      </symbol>
    </symbols>
    <source-symbol>
      <symbol name="0" type="line" alpha="1" clip_to_extent="1" force_rhr="0">
        <layer class="SimpleLine" enabled="1" pass="0" locked="0">
          <Option type="Map">
            <Option name="line_color" type="QString" value="215,25,28,255" />
            <Option name="line_width" type="QString" value="0.8" />
            <Option name="line_width_unit" type="QString" value="MM" />
            <Option name="line_style" type="QString" value="solid" />
            <Option name="capstyle" type="QString" value="round" />
            <Option name="joinstyle" type="QString" value="round" />
            <Option name="offset" type="QString" value="0" />
          </Option>
          <prop k="line_color" v="215,25,28,255" />
          <prop k="line_width" v="0.8" />
          <prop k="line_width_unit" v="MM" />
          <prop k="line_style" v="solid" />
          <prop k="capstyle" v="round" />
          <prop k="joinstyle" v="round" />
          <prop k="offset" v="0" />
        </layer>
      </symbol>
    </source-symbol>
    <colorramp type="gradient" name="[source]">
      <Option type="Map">
        <Option name="color1" type="QString" value="215,25,28,255" />
        <Option name="color2" type="QString" value="26,150,65,255" />
        <Option name="discrete" type="QString" value="0" />
        <Option name="rampType" type="QString" value="gradient" />
        <Option name="stops" type="QString" value="0.5;255,255,191,255" />
      </Option>
      <prop k="color1" v="215,25,28,255" />
      <prop k="color2" v="26,150,65,255" />
      <prop k="discrete" v="0" />
      <prop k="rampType" v="gradient" />
      <prop k="stops" v="0.5;255,255,191,255" />
    </colorramp>
    <classificationMethod id="EqualInterval" />
    <mode name="equal" />
  </renderer-v2>
  <layerGeometryType>1</layerGeometryType>
</qgis>
